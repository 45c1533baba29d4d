"""`xdpd doctor`: what keeps packets from xdpd on this host, and the fix;
the checks themselves are in control/doctor.py.
"""
from __future__ import annotations

import json
import os
import sys

from xdpd import exitcodes
from xdpd.config.model import ConfigError
from xdpd.config.schema import load_config
from xdpd.control.doctor import DoctorHost, diagnose, exit_code
from xdpd.control.server import request


def command(args) -> int:
    if args.seconds < 0:
        print("xdpd doctor: --seconds must be 0 or more", file=sys.stderr)
        return exitcodes.USAGE
    try:
        # the schema only: what the host lacks is a finding, not a refusal
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return exitcodes.CONFIG
    socket_path = args.socket or os.environ.get("XDPD_SOCKET") or config.control.socket
    report = diagnose(config, DoctorHost(), lambda: request(socket_path, "status"),
                      seconds=args.seconds)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines(verbose=args.verbose)))
    return exit_code(report.findings)
