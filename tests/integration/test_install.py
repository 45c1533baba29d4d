"""`make install` and `make uninstall` of this checkout into a temporary
prefix: the virtualenv with the built package, the command, the systemd unit
pointing at them, the example configuration (never overwriting the
operator's) and the monitoring files; then nothing left behind."""
import filecmp
import os
import shutil
import subprocess
import tempfile

import pytest

import xdpd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_CONFIG = os.path.join(ROOT, "config", "xdpd.yaml")
MONITORING = ("grafana", "prometheus")           # deploy/<dir> -> share/xdpd/<dir>

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("make", "clang", "gcc", "sed")),
    reason="needs make, clang and gcc (make deps) to build the package")


@pytest.fixture
def prefix():
    """A throw-away install root, removed with everything in it."""
    path = tempfile.mkdtemp(prefix="xdpd-install-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make(target: str, prefix: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", ROOT, target, f"PREFIX={prefix}",
                           f"SYSCONFDIR={prefix}/etc", f"UNITDIR={prefix}/unit", *extra],
                          capture_output=True, text=True, timeout=300)


def installed_files(root: str) -> list[str]:
    """Everything under root that is not a directory (files, links)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames
                                 if os.path.islink(os.path.join(dirpath, d))]:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def monitoring_files() -> list[str]:
    files = []
    for top in MONITORING:
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, "deploy", top)):
            files += [os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, "deploy"))
                      for f in filenames]
    return files


def test_install_runs_and_uninstall_leaves_nothing(prefix):
    out = make("install", prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    venv = os.path.join(prefix, "lib", "xdpd", "venv")
    xdpd_cmd = os.path.join(prefix, "bin", "xdpd")
    conf = os.path.join(prefix, "etc", "xdpd", "xdpd.yaml")

    assert os.readlink(xdpd_cmd) == os.path.join(venv, "bin", "xdpd")
    # the package in the virtualenv, with what its build made, not this checkout
    pkg = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                          "import os, xdpd; print(os.path.dirname(xdpd.__file__))"],
                         capture_output=True, text=True, cwd=prefix, check=True).stdout.strip()
    assert pkg.startswith(venv + os.sep), pkg
    assert "rr_redirect.bpf.o" in os.listdir(os.path.join(pkg, "kernel"))
    names = os.listdir(os.path.join(pkg, "datapath"))
    assert any(n.startswith("_fastpath.") and n.endswith(".so") for n in names), names
    assert not os.path.exists(os.path.join(pkg, "lab"))     # the lab is an extra

    unit = open(os.path.join(prefix, "unit", "xdpd.service")).read()
    assert f"ExecStart={xdpd_cmd} run --config {conf}\n" in unit
    assert f"ExecStartPre={xdpd_cmd} check-config {conf}\n" in unit
    assert f"ExecReload={xdpd_cmd} reload\n" in unit
    assert "/usr/local/" not in unit
    assert filecmp.cmp(conf, SHIPPED_CONFIG, shallow=False)
    for rel in monitoring_files():
        assert filecmp.cmp(os.path.join(prefix, "share", "xdpd", rel),
                           os.path.join(ROOT, "deploy", rel), shallow=False), rel
    assert os.path.exists(os.path.join(prefix, "share", "doc", "xdpd", "README.md"))

    version = subprocess.run([xdpd_cmd, "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"xdpd {xdpd.__version__}"
    # the example names veth-a and veth-b, which this host does not have
    check = subprocess.run([xdpd_cmd, "check-config", conf], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 78, check.stdout + check.stderr
    assert "veth-a" in check.stderr and "Traceback" not in check.stderr

    if shutil.which("systemd-analyze"):
        # the rewritten unit names binaries that now exist
        verify = subprocess.run(["systemd-analyze", "verify",
                                 os.path.join(prefix, "unit", "xdpd.service")],
                                capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "xdpd" not in verify.stdout + verify.stderr, verify.stdout + verify.stderr

    # `xdpd demo` says how to add the lab; `make install-lab` adds it
    demo = subprocess.run([xdpd_cmd, "demo"], capture_output=True, text=True, timeout=60)
    assert demo.returncode == 69 and "install-lab" in demo.stderr, demo.stderr
    out = make("install-lab", prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert os.path.getsize(os.path.join(pkg, "lab", "lab.bpf.o")) > 0
    demo = subprocess.run([xdpd_cmd, "demo", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert demo.returncode == 0 and "--seconds" in demo.stdout, demo.stderr

    out = make("uninstall", prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert installed_files(prefix) == []
    assert not os.path.exists(os.path.join(prefix, "etc", "xdpd"))
    assert not os.path.exists(os.path.join(prefix, "lib", "xdpd"))


def test_an_operators_config_is_neither_overwritten_nor_removed(prefix):
    conf = os.path.join(prefix, "etc", "xdpd", "xdpd.yaml")
    os.makedirs(os.path.dirname(conf))
    with open(SHIPPED_CONFIG) as f:
        mine = f.read().replace("veth-a", "eth1")
    with open(conf, "w") as f:
        f.write(mine)

    out = make("install", prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"kept {conf}" in out.stdout
    assert open(conf).read() == mine
    example = os.path.join(prefix, "share", "xdpd", "xdpd.yaml.example")
    assert filecmp.cmp(example, SHIPPED_CONFIG, shallow=False)

    out = make("uninstall", prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"kept {conf}" in out.stdout
    assert open(conf).read() == mine
    assert installed_files(prefix) == [os.path.relpath(conf, prefix)]


def test_a_link_that_is_not_ours_survives_uninstall(prefix):
    os.makedirs(os.path.join(prefix, "bin"))
    other = os.path.join(prefix, "bin", "xdpd")
    os.symlink("/bin/true", other)
    out = make("uninstall", prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert os.readlink(other) == "/bin/true"


def test_destdir_is_refused_before_anything_is_built(prefix):
    out = make("install", prefix, f"DESTDIR={prefix}/stage")
    assert out.returncode != 0
    assert "DESTDIR is not supported" in out.stderr
    assert installed_files(prefix) == []
