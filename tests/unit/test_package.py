"""`pip install .` gives a working xdpd: the package build itself compiles
the C extension and the XDP object (nothing is built by hand).  The wheel
is the product alone: no lab, no lab BPF object, no microbenchmark or
fuzzer in the extension; the lab is an extra (`pip install ./lab`), with
which `xdpd demo` is there, and without which it says how to add it."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(not shutil.which("clang"), reason="needs clang to build")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A clean copy of the tracked tree, as a fresh checkout would have."""
    src = tmp_path_factory.mktemp("src") / "xdpd"
    files = subprocess.run(["git", "-C", REPO, "ls-files"], capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        os.makedirs(src / os.path.dirname(f), exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), src / f)
    return src


def build_wheel(source, out, project: str = "."):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(source / project)], check=True)


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build_wheel(source, out)
    (whl,) = out.glob("xdpd-*.whl")
    return whl


@pytest.fixture(scope="module")
def lab_wheel(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("labwheel")
    build_wheel(source, out, "lab")
    (whl,) = out.glob("xdpd_lab-*.whl")
    return whl


def install(target, *wheels):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), *map(str, wheels)], check=True)


def run_python(code: str, target, cwd, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(target)), cwd=cwd)


def test_wheel_carries_extension_and_xdp_object(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("xdpd/datapath/_fastpath") and n.endswith(".so") for n in names)
    assert "xdpd/kernel/rr_redirect.bpf.o" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_the_wheel_is_the_product_alone(wheel):
    z = zipfile.ZipFile(wheel)
    names = z.namelist()
    assert not [n for n in names if n.startswith("xdpd/lab/") or n.endswith("lab.bpf.o")]
    assert not [n for n in names if "testing" in n or "fuzz" in n]
    (so,) = [n for n in names if n.startswith("xdpd/datapath/_fastpath") and n.endswith(".so")]
    binary = z.read(so)
    for marker in (b"microbench", b"fuzz seed", b"_fastpath_testing"):
        assert marker not in binary, marker


def test_installed_package_runs(wheel, tmp_path):
    target = tmp_path / "site"
    install(target, wheel)
    code = ("import xdpd, xdpd.datapath._fastpath, xdpd.kernel.xdp_program, os;"
            "assert xdpd.__file__.startswith(%r);"
            "assert os.path.getsize(xdpd.kernel.xdp_program.object_path()) > 0;"
            "from xdpd.cli import main; raise SystemExit(main(['--version']))") % str(target)
    out = run_python(code, target, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "xdpd 0.1.0"


def test_demo_without_the_lab_says_how_to_add_it(wheel, tmp_path):
    target = tmp_path / "site"
    install(target, wheel)
    # -S: without site-packages, where a checkout's editable install would
    # lend its own xdpd.lab (the command needs nothing from there)
    out = run_python("from xdpd.cli import main; raise SystemExit(main(['demo']))",
                     target, tmp_path, "-S")
    assert out.returncode == 69, out.stderr           # EX_UNAVAILABLE
    assert "the lab is not installed" in out.stderr and "install-lab" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_lab_extra_brings_the_demo(wheel, lab_wheel, tmp_path):
    names = zipfile.ZipFile(lab_wheel).namelist()
    assert "xdpd/lab/lab.bpf.o" in names and "xdpd/lab/demo.py" in names
    assert not [n for n in names if n.startswith("xdpd/") and not n.startswith("xdpd/lab/")]
    target = tmp_path / "site"
    install(target, wheel, lab_wheel)
    code = ("import os, xdpd.lab.demo, xdpd.lab.xdp as x;"
            "assert xdpd.lab.demo.__file__.startswith(%r);"
            "assert os.path.getsize(x.object_path()) > 0;"
            "from xdpd.cli import main; raise SystemExit(main(['demo', '--help']))") % str(target)
    out = run_python(code, target, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--seconds" in out.stdout
