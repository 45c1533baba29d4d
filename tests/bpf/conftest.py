"""Fixtures for the XDP program tests: a freshly built object, and a
uniquely named network namespace with a multi-queue veth pair that the test
thread enters (BPF_PROG_TEST_RUN resolves ingress_ifindex in the caller's
netns) and that is always deleted afterwards, also when the test fails."""
import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


@contextlib.contextmanager
def inside_netns(name: str):
    """Move this thread into netns `name` (from /run/netns) and back."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(orig)
    finally:
        os.close(orig)


def ip(*args: str) -> str:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


@dataclass
class VethLab:
    netns: str
    ifname: str         # the end the tests attach to and test-run on
    peer: str
    ifindex: int
    queues: int

    def ip(self, *args: str) -> str:
        return ip("-n", self.netns, *args)


@contextlib.contextmanager
def veth_lab(queues: int):
    """A netns holding a veth pair with `queues` rx/tx queues per end; the
    calling thread is inside it until the block ends, then it is deleted."""
    name = f"xdpdbpf-{os.getpid()}-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        # not 'a'/'b': 'ip link add a ...' reads 'a' as 'address'
        q = str(queues)
        ip("-n", name, "link", "add", "xdpa", "numrxqueues", q, "numtxqueues", q,
           "type", "veth", "peer", "name", "xdpb", "numrxqueues", q,
           "numtxqueues", q)
        ip("-n", name, "link", "set", "dev", "xdpa", "up")
        ip("-n", name, "link", "set", "dev", "xdpb", "up")
        with inside_netns(name):
            import socket
            yield VethLab(name, "xdpa", "xdpb", socket.if_nametoindex("xdpa"),
                          queues)
    finally:
        ip("netns", "del", name)


def _skip_reason(*tools: str) -> str:
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN)"
    for tool in ("ip", *tools):
        if not shutil.which(tool):
            return f"needs {tool}"
    try:
        from xdpd.kernel import libbpf
        libbpf.library()
    except OSError as e:
        return str(e)
    return ""


def build_object(tmp_path_factory, source: str, packaged) -> str:
    """bpf/<source> compiled with the flags setup.py uses, or, without
    clang, the packaged object (packaged() returns its path or raises
    BpfError); skips the test when neither is there."""
    from xdpd.kernel import libbpf
    clang = os.environ.get("CLANG", shutil.which("clang"))
    if not clang:
        try:
            return packaged()
        except libbpf.BpfError as e:
            pytest.skip(f"no clang to build bpf/{source}, and {e}")
    out = str(tmp_path_factory.mktemp("bpf") / (os.path.splitext(source)[0] + ".bpf.o"))
    triplet = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                             text=True).stdout.strip() if shutil.which("gcc") else ""
    multiarch = [f"-I/usr/include/{triplet}"] if triplet else []
    subprocess.run([clang, "-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
                    *multiarch, "-I", os.path.join(REPO, "bpf"), "-c",
                    os.path.join(REPO, "bpf", source), "-o", out], check=True)
    return out


@pytest.fixture(scope="session")
def rr_object(tmp_path_factory) -> str:
    """Path of rr_redirect built from the current bpf/ sources, or the
    packaged object when clang is missing."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from xdpd.kernel import libbpf, xdp_program
    path = build_object(tmp_path_factory, "rr_redirect.c", xdp_program.object_path)
    # Can this kernel load it at all?  (BPF disabled, lockdown, no XSKMAP)
    try:
        xdp_program.XdpProgram.load(path, name="probe").close()
    except libbpf.BpfError as e:
        pytest.skip(f"kernel refuses the XDP program: {e}")
    return path


@pytest.fixture(scope="session")
def lab_object(tmp_path_factory) -> str:
    """lab.bpf.o built from the current bpf/lab.c, or the packaged one
    without clang; skip where the kernel refuses it."""
    reason = _skip_reason("ethtool", "nsenter")
    if reason:
        pytest.skip(reason)
    from xdpd.kernel import libbpf
    from xdpd.lab import xdp as labxdp
    path = build_object(tmp_path_factory, "lab.c", labxdp.object_path)
    try:
        labxdp.Generator(path).close()
    except libbpf.BpfError as e:
        pytest.skip(f"kernel refuses bpf/lab.c: {e}")
    return path


@pytest.fixture
def make_lab(rr_object):
    """veth_lab itself, for tests that need another queue count."""
    return veth_lab


@pytest.fixture
def lab(rr_object):
    """4-queue veth pair in a fresh netns; the test runs inside it."""
    with veth_lab(4) as lab:
        yield lab


@pytest.fixture
def prog(rr_object, lab):
    """A loaded rr_redirect, closed (and so detached) after the test."""
    from xdpd.kernel import xdp_program

    with xdp_program.XdpProgram.load(rr_object, name=lab.ifname) as p:
        yield p
