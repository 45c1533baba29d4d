"""Code in the directory xdpd is started from never runs: every Python
child (workers, standbys) is isolated from the current directory,
PYTHONPATH and the user site (xdpd/isolated.py).

The directory holds a whole `xdpd/` package and modules named like the
standard library modules a worker imports; each writes a marker file if it
is ever imported.  `xdpd run` is started there the way an operator starts
it (the installed `xdpd` command); a child started with PYTHONPATH pointing
there ignores it too."""
import os
import sys

import pytest
from integration_helpers import ROOT_ONLY

from xdpd.lab.daemon import LabDaemon, forward_config
from xdpd.lab.traffic import SinkProcess, send_in_ns

pytestmark = ROOT_ONLY

TRAPPED = ("json", "dataclasses", "ctypes", "logging", "signal", "runpy", "selectors",
           "subprocess", "yaml", "psutil", "prometheus_client")


@pytest.fixture
def trap_dir(tmp_path):
    marker = tmp_path / "IMPORTED"
    body = (f"open({str(marker)!r}, 'a').write(__name__ + ' from ' + __file__ + '\\n')\n"
            "raise ImportError('booby trap')\n")
    for name in TRAPPED:
        (tmp_path / f"{name}.py").write_text(body)
    pkg = tmp_path / "xdpd"
    pkg.mkdir()
    for name in ("__init__", "__main__", "worker", "cli", "exitcodes", "privileges", "logs"):
        (pkg / f"{name}.py").write_text(body)
    return tmp_path, marker


def xdpd_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "xdpd")
    if not os.path.exists(script):
        pytest.skip(f"no installed xdpd command beside {sys.executable}")
    return [script]


def test_a_child_ignores_the_current_directory_and_pythonpath(trap_dir):
    import subprocess

    from xdpd.isolated import python_argv
    cwd, marker = trap_dir
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd), "PYTHONSTARTUP": str(cwd / "json.py")}
    p = subprocess.run(python_argv("xdpd.datapath.worker", "x/q0"), input="not a spec\n", cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=60)
    assert "bad worker spec on stdin" in p.stderr, p.stderr
    assert not marker.exists(), marker.read_text()


def test_workers_import_nothing_from_the_current_directory(lab, trap_dir):
    cwd, marker = trap_dir
    d = LabDaemon(lab, forward_config(lab), command=xdpd_command(), cwd=str(cwd))
    try:
        d.start()
        # a replaced worker comes from a standby: spawned the same way
        assert len(d.worker_pids()) == 4
        with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=5, expect=500) as sink:
            sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                              count=500, tag=5, rate=5000)
            got = sink.result(timeout=30)
        assert sent["sent"] == 500 and got["received"] == 500
    finally:
        d.close()
    assert not marker.exists(), marker.read_text()
    assert "Traceback" not in d.log() and "ImportError" not in d.log(), d.log()[-2000:]
