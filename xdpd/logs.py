"""Logging set-up shared by the command line and the workers.

No timestamps and no log file: systemd's journal adds both.  The level is
one of LEVELS, case-insensitive, from --log-level or XDPD_LOG_LEVEL (which
the workers inherit from the supervisor); anything else is the caller's
error to report, never a ValueError out of logging."""
from __future__ import annotations

import logging
import sys

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(levelname)s %(name)s: %(message)s"


def parse_level(text: str | None) -> str | None:
    """The level's canonical name, or None if text names no level."""
    if text is None:
        return None
    name = text.strip().lower()
    return name if name in LEVELS else None


def setup_logging(level: str) -> None:
    """level: one of LEVELS (parse_level's answer)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=FORMAT)
