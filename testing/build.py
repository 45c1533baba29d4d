#!/usr/bin/env python3
"""Build the fast path's test harness, `_fastpath_testing` (microbench and
fuzz beside everything `_fastpath` has), next to this file.

    python testing/build.py            # -O2, as `make build` does
    build(dest, flags)                 # e.g. AddressSanitizer (tests/fuzz_fastpath.py)

It is compiled here, with gcc, and never by setup.py: the installed package
ships the workers' `_fastpath` alone.  Owns nothing but the compile line;
the code is testing/fastpath_testing.c, which includes xdpd/datapath/_fastpath.c
(the fast path's one translation unit, which includes its units in turn).
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCE = os.path.join(HERE, "fastpath_testing.c")
NAME = "_fastpath_testing"
OPTIMIZED = ["-O2"]


def build(dest: str = HERE, flags: list[str] = OPTIMIZED, fastpath: str | None = None) -> str:
    """Compile the harness into dest, with flags (include dirs bpf/ and
    xdpd/, gnu11, as setup.py compiles the fast path); the module's path.
    fastpath: another copy of xdpd/datapath/_fastpath.c to include (a mutant that
    the tests show the fuzzer catches), with copies of all its units beside it
    (tests/fuzz_fastpath.py, mutant()); its directory is searched first."""
    out = os.path.join(dest, NAME + sysconfig.get_config_var("EXT_SUFFIX"))
    first = [os.path.dirname(os.path.abspath(fastpath))] if fastpath else []
    cmd = ["gcc", "-shared", "-fPIC", "-std=gnu11", "-Wall", "-Wextra",
           "-Wno-unused-parameter", *flags,
           *(f"-I{d}" for d in first + [os.path.join(ROOT, "bpf"), os.path.join(ROOT, "xdpd", "datapath")]),
           "-I", sysconfig.get_paths()["include"], SOURCE, "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {NAME} failed:\n{r.stderr[-4000:]}")
    return out


_loaded: dict[str, object] = {}


def load(path: str | None = None):
    """The module built at path (default: the one next to this file, which
    `make build` makes), loaded once."""
    import importlib.machinery
    import importlib.util
    path = path or os.path.join(HERE, NAME + sysconfig.get_config_var("EXT_SUFFIX"))
    if path in _loaded:
        return _loaded[path]
    if not os.path.exists(path):
        raise ImportError(f"{path} is not built: run `make build` (or python testing/build.py)")
    loader = importlib.machinery.ExtensionFileLoader(NAME, path)
    spec = importlib.util.spec_from_loader(NAME, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    _loaded[path] = mod
    return mod


if __name__ == "__main__":
    try:
        print(build())
    except RuntimeError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
