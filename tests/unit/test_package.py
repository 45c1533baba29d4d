"""`pip install .` gives a working xdpd: the package build itself compiles
the C extension and the XDP object (nothing is built by hand)."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(not shutil.which("clang"), reason="needs clang to build")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "xdpd"
    # build from a clean copy of the tracked tree, as a fresh checkout would
    files = subprocess.run(["git", "-C", REPO, "ls-files"], capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        os.makedirs(src / os.path.dirname(f), exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(src)], check=True)
    (whl,) = out.glob("xdpd-*.whl")
    return whl


def test_wheel_carries_extension_and_xdp_object(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("xdpd/datapath/_fastpath") and n.endswith(".so") for n in names)
    assert "xdpd/kernel/rr_redirect.bpf.o" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_package_runs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(wheel)], check=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import xdpd, xdpd.datapath._fastpath, xdpd.kernel.xdp_program, os;"
            "assert xdpd.__file__.startswith(%r);"
            "assert os.path.getsize(xdpd.kernel.xdp_program.object_path()) > 0;"
            "from xdpd.cli import main; raise SystemExit(main(['--version']))") % str(target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "xdpd 0.1.0"
