"""The package's shape, read from the imports themselves.

xdpd has planes (docs/ARCHITECTURE.md, "Map of the tree"), and imports flow
one way between them:

  base      xdpd/__init__, exitcodes, logs, isolated: no other xdpd module
  kernel    the only code that calls bpf(), setsockopt(SOL_XDP), netlink,
            ethtool: base only
  config    the model, loader and reload classification: base, kernel
  datapath  worker process and C fast path: base, kernel
  control   supervisor and everything around it: all of the above
  lab       the test and demo harness: all of the above
  cli       the commands: everything, the lab only inside `xdpd demo`

There are no import cycles between modules, at module level or inside
functions.  The lab is a harness: the daemon's own modules must run
without it.
"""
import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "xdpd"
LAB = "xdpd.lab"
MAY_REACH_THE_LAB = {"xdpd.cli.demo"}  # `xdpd demo`; imported only when it runs
BASE = {"xdpd", "xdpd.exitcodes", "xdpd.logs", "xdpd.isolated"}
# plane -> the planes it may import (itself included)
MAY_IMPORT = {
    "base": {"base"},
    "kernel": {"base", "kernel"},
    "config": {"base", "kernel", "config"},
    "datapath": {"base", "kernel", "datapath"},
    "control": {"base", "kernel", "config", "datapath", "control"},
    "lab": {"base", "kernel", "config", "datapath", "control", "lab"},
    "cli": {"base", "kernel", "config", "datapath", "control", "lab", "cli"},
}
# Files allowed over MAX_LINES, and why (docs/ARCHITECTURE.md says it too).
MAX_LINES = 800
LONG_FILES: dict[str, str] = {}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path, name: str | None = None) -> list[tuple[int, str, bool]]:
    """(line, absolute module, at module level?) for every import in the file
    of module `name`; `from X import y` gives both X and X.y (y may be a
    module: `from xdpd import lab`)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base, id(node) in top))
            found += [(node.lineno, f"{base}.{a.name}", id(node) in top) for a in node.names]
    return found


def product_modules():
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if not module_name(p).startswith(LAB)]


def reaches_lab(module: str) -> bool:
    return module == LAB or module.startswith(LAB + ".")


def test_the_walk_sees_the_package():
    names = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert {"xdpd.control.supervisor", "xdpd.datapath.worker", "xdpd.lab.demo",
            "xdpd.lab.netns"} <= names


@pytest.mark.parametrize("path", product_modules(), ids=module_name)
def test_the_daemon_never_imports_the_lab(path):
    name = module_name(path)
    for line, module, top_level in imports(path):
        if not reaches_lab(module):
            continue
        assert name in MAY_REACH_THE_LAB, (
            f"{path.name}:{line} imports {module}: the daemon's modules must not "
            "depend on the lab (xdpd/lab/__init__.py)")


def test_the_guard_can_fail(tmp_path):
    """Relative imports are resolved, so each of these in a product module
    would be caught."""
    path = tmp_path / "supervisor.py"
    path.write_text("from ..lab.netns import Lab\nfrom .. import lab\nimport xdpd.lab.traffic\n"
                    "def f():\n    from ..lab import demo\n")
    found = [(m, top) for _, m, top in imports(path, "xdpd.control.supervisor")
             if reaches_lab(m)]
    assert sorted(found) == sorted([("xdpd.lab.netns", True), ("xdpd.lab.netns.Lab", True),
                                    ("xdpd.lab", True), ("xdpd.lab.traffic", True),
                                    ("xdpd.lab", False), ("xdpd.lab.demo", False)]), found


def test_the_workers_extension_carries_no_test_harness():
    """microbench() and fuzz() live in testing/ (`_fastpath_testing`), built
    by `make build` beside the product and never by setup.py: the module
    every worker loads has neither, nor their code."""
    from xdpd.datapath import _fastpath
    assert not hasattr(_fastpath, "fuzz") and not hasattr(_fastpath, "microbench")
    binary = open(_fastpath.__file__, "rb").read()
    for marker in (b"fuzz seed", b"microbench", b"_fastpath_testing"):
        assert marker not in binary, marker
    setup = (PACKAGE.parent / "setup.py").read_text()
    assert "fastpath_testing" not in setup


def test_the_harness_is_the_same_fast_path_with_its_tools():
    import sys
    sys.path.insert(0, str(PACKAGE.parent / "testing"))
    import build as harness
    from xdpd.datapath import _fastpath
    t = harness.load()
    assert callable(t.fuzz) and callable(t.microbench)
    product = {n for n in dir(_fastpath) if not n.startswith("__")}
    assert product <= set(dir(t)), product - set(dir(t))


def plane(module: str) -> str:
    if module in BASE:
        return "base"
    if module == "xdpd.__main__":
        return "cli"
    return module.split(".")[1]


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, known) -> str | None:
    """The xdpd module an import names (`from X import name` names X.name,
    which may be a function of X, not a module)."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges = {}
    for name, path in mods.items():
        edges[name] = {t for _, m, _ in imports(path)
                       if m.startswith("xdpd") and (t := resolve(m, mods)) and t != name}
    return edges


def test_every_module_has_a_plane():
    planes = {plane(m) for m in modules()}
    assert planes <= set(MAY_IMPORT), planes - set(MAY_IMPORT)


@pytest.mark.parametrize("name", sorted(modules()), ids=str)
def test_imports_flow_one_way(name):
    mods = modules()
    for line, module, top_level in imports(mods[name]):
        target = resolve(module, mods) if module.startswith("xdpd") else None
        if target is None or target == name:
            continue
        if name in MAY_REACH_THE_LAB and reaches_lab(target):
            continue
        assert plane(target) in MAY_IMPORT[plane(name)], (
            f"{mods[name].relative_to(PACKAGE.parent)}:{line}: {name} ({plane(name)}) imports "
            f"{target} ({plane(target)}); {plane(name)} may import only "
            f"{sorted(MAY_IMPORT[plane(name)])} (tests/unit/test_layering.py)")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ naming its own modules is not a cycle of theirs
    for name in edges:
        edges[name] = {t for t in edges[name] if not name.startswith(t + ".")}
    assert cycles(edges) == []


def test_the_cycle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(modules()), ids=str)
def test_each_file_says_what_it_owns(name):
    """A module opens with a docstring (what it owns, what it must not do),
    and stays under MAX_LINES unless LONG_FILES says why."""
    path = modules()[name]
    text = path.read_text()
    if text.strip():
        assert ast.get_docstring(ast.parse(text)), f"{path}: no opening docstring"
    lines = text.count("\n")
    assert lines <= MAX_LINES or name in LONG_FILES, (
        f"{path}: {lines} lines (over {MAX_LINES}); split it, or say why in LONG_FILES")



def test_a_command_loads_only_its_own_modules():
    """The parser imports no command: `xdpd status` loads no supervisor,
    and nothing but `xdpd demo` loads the lab."""
    import subprocess
    import sys
    code = ("import sys; from xdpd.cli import build_parser; build_parser(); "
            "import xdpd.cli.status, xdpd.cli.reload, xdpd.cli.check_config, xdpd.cli.top; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('xdpd'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.split()
    assert not [m for m in out if reaches_lab(m)], out
    assert "xdpd.control.supervisor" not in out and "xdpd.cli.run" not in out, out


def test_architecture_map_names_every_module():
    """docs/ARCHITECTURE.md's map of the tree lists each module with its
    plane, and nothing that is not there."""
    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    section = doc.split("## Map of the tree", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+\.py)` \| (\w+) \|", section, re.M)
    listed = {("xdpd." + m.removesuffix(".py").replace("/", ".")).removesuffix(".__init__"): p
              for m, p in rows}
    listed = {("xdpd" if m == "xdpd.__init__" else m): p for m, p in listed.items()}
    assert listed == {m: plane(m) for m in modules()}
