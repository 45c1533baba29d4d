"""The package's layering, read from the imports themselves.

xdpd.lab (netns, daemon, traffic, BPF generator, demo) is a harness: the
daemon's own modules must run without it, so none of them may import it.
The one door is the CLI's `demo` command, which imports it when it runs.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "xdpd"
LAB = "xdpd.lab"
MAY_REACH_THE_LAB = {"xdpd.cli"}         # `xdpd demo`, imported in cmd_demo only


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
    assert {"xdpd.supervisor", "xdpd.worker", "xdpd.lab.demo", "xdpd.lab.netns"} <= names


@pytest.mark.parametrize("path", product_modules(), ids=module_name)
def test_the_daemon_never_imports_the_lab(path):
    name = module_name(path)
    for line, module, top_level in imports(path):
        if not reaches_lab(module):
            continue
        assert name in MAY_REACH_THE_LAB and not top_level, (
            f"{path.name}:{line} imports {module}: the daemon's modules must not "
            "depend on the lab (xdpd/lab/__init__.py)")


def test_the_guard_can_fail(tmp_path):
    """Relative imports are resolved, so each of these in a product module
    would be caught."""
    path = tmp_path / "supervisor.py"
    path.write_text("from .lab.netns import Lab\nfrom . import lab\nimport xdpd.lab.traffic\n"
                    "def f():\n    from .lab import demo\n")
    found = [(m, top) for _, m, top in imports(path, "xdpd.supervisor") if reaches_lab(m)]
    assert sorted(found) == sorted([("xdpd.lab.netns", True), ("xdpd.lab.netns.Lab", True),
                                    ("xdpd.lab", True), ("xdpd.lab.traffic", True),
                                    ("xdpd.lab", False), ("xdpd.lab.demo", False)]), found


def test_the_workers_extension_carries_no_test_harness():
    """microbench() and fuzz() live in testing/ (`_fastpath_testing`), built
    by `make build` beside the product and never by setup.py: the module
    every worker loads has neither, nor their code."""
    from xdpd import _fastpath
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
    from xdpd import _fastpath
    t = harness.load()
    assert callable(t.fuzz) and callable(t.microbench)
    product = {n for n in dir(_fastpath) if not n.startswith("__")}
    assert product <= set(dir(t)), product - set(dir(t))
