"""`xdpd demo`: forward traffic through a throw-away veth lab (xdpd.lab).

The one command that reaches the lab.  The lab is an extra, its own
distribution (lab/: `make install-lab`, or `pip install ./lab`), so an
install of the daemon alone answers this command with how to add it.
"""
from __future__ import annotations

import importlib.util
import sys

from xdpd import exitcodes
from xdpd.cli import need_root


def command(args) -> int:
    if importlib.util.find_spec("xdpd.lab") is None:
        print("xdpd demo: the lab is not installed with this xdpd; it is an extra: "
              "'make install-lab' from the source tree (or 'pip install ./lab' into "
              "xdpd's environment)", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    from xdpd.lab.demo import run_demo
    denied = need_root("demo")
    if denied is not None:
        return denied
    return run_demo(seconds=args.seconds, queues=args.queues)
