"""`xdpd demo`: forward traffic through a throw-away veth lab (xdpd.lab).

The one command that reaches the lab; this module is imported only when
the command runs, so no other command loads the harness.
"""
from __future__ import annotations

from xdpd.cli import need_root
from xdpd.lab.demo import run_demo


def command(args) -> int:
    denied = need_root("demo")
    if denied is not None:
        return denied
    return run_demo(seconds=args.seconds, queues=args.queues)
