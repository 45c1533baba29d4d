"""The command line of every Python process xdpd starts.

A root daemon must not import code from wherever it was started: `python
-m pkg` puts the current directory first on sys.path, so a `json.py` (or a
whole `xdpd/` tree) there would run as root with every capability.  Every
child (workers, standbys, the lab's daemon and traffic tools) therefore
runs in isolated mode (`-I`: no current directory, no PYTHONPATH or other
PYTHON* variables, no user site) and finds xdpd where the parent found it:
the directory above this very package, appended to sys.path (after the
standard library and site-packages, so nothing there shadows them; an
installed xdpd is found in site-packages anyway, a checkout run in place
through this entry).  The child then runs the module as `-m` would.

The child checks that it imported the same xdpd as its parent: two copies
(an installed one and a checkout, say) would share one control area with
two layouts."""
from __future__ import annotations

import os
import sys

# sys.argv of the child: ['-c', ROOT, MODULE, ARGS...]
_BOOT = ("import os, runpy, sys\n"
         "root, module = sys.argv[1], sys.argv[2]\n"
         "sys.path.append(root)\n"
         "import xdpd\n"
         "got = os.path.dirname(os.path.dirname(os.path.abspath(xdpd.__file__)))\n"
         "if got != root:\n"
         "    sys.exit(f'xdpd: {module}: imported xdpd from {got}, expected {root}'\n"
         "             ' (two copies of xdpd on this machine; run the one you installed)')\n"
         "sys.argv = [module, *sys.argv[3:]]\n"
         "runpy.run_module(module, run_name='__main__', alter_sys=True)\n")


def package_root() -> str:
    """The directory that holds this xdpd package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_argv(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args...` isolated (see above)."""
    return [sys.executable, "-I", "-c", _BOOT, package_root(), module, *args]
