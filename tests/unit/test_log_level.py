"""The log level: from --log-level or XDPD_LOG_LEVEL, any case; a bad one is
a usage error naming the variable, never a traceback, in the CLI or in a
worker (which inherits the variable from the supervisor)."""
import subprocess
import sys

import pytest

from xdpd import exitcodes
from xdpd.logs import parse_level


@pytest.mark.parametrize("text, level", [("debug", "debug"), ("DEBUG", "debug"),
                                         (" Warning ", "warning"), ("info", "info"),
                                         ("verbose", None), ("", None), (None, None)])
def test_parse_level(text, level):
    assert parse_level(text) == level


def run(args, env_level, stdin=""):
    env = {"PATH": "/usr/bin:/bin", "XDPD_LOG_LEVEL": env_level}
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.mark.parametrize("level", ["debug", "DEBUG", "error"])
def test_a_worker_logs_at_any_valid_level_instead_of_dying(level):
    # a bad spec: the worker must get as far as saying so through logging
    p = run(["-m", "xdpd.datapath.worker", "x/q0"], level, stdin="not a spec\n")
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == exitcodes.WORKER_BOOT_FAILED
    if level != "error":
        assert "bad worker spec on stdin" in p.stderr


def test_a_bad_level_in_the_environment_is_a_usage_error():
    p = run(["-m", "xdpd", "check-config", "/nonexistent.yaml"], "chatty")
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 2
    assert "XDPD_LOG_LEVEL='chatty' is not a log level; use one of debug, info" in p.stderr


def test_the_flag_takes_any_case():
    p = run(["-m", "xdpd", "--log-level", "DEBUG", "check-config", "/nonexistent.yaml"],
            "info")
    assert "Traceback" not in p.stderr and "invalid choice" not in p.stderr, p.stderr
