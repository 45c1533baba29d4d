"""`xdpd reload [--config PATH]`: apply a changed configuration to the
running daemon, over its control socket.
"""
from __future__ import annotations

import os
import sys

from xdpd import exitcodes
from xdpd.config.file import read_config_file
from xdpd.config.model import ConfigError
from xdpd.control.server import RELOAD_TIMEOUT_S, ControlError, request


def command(args) -> int:
    fields = {}
    if args.config:
        try:
            text = read_config_file(args.config)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return exitcodes.CONFIG
        fields = {"config_path": os.path.abspath(args.config), "config_text": text}
    try:
        result = request(args.socket, "reload", timeout=RELOAD_TIMEOUT_S, **fields)
    except ControlError as e:
        if e.result is None:                # nobody answered
            print(f"xdpd reload: {e}", file=sys.stderr)
            return exitcodes.UNAVAILABLE
        print(f"xdpd reload: {e.result.get('result', 'failed')}: {e}", file=sys.stderr)
        return exitcodes.OSERR if e.result.get("result") == "failed" else exitcodes.CONFIG
    print(f"{result['result']} (generation {result['generation']}, "
          f"{result['duration_seconds'] * 1e3:.1f} ms)")
    for line in result.get("changes", []):
        print(f"  {line}")
    return exitcodes.OK
