"""What a worker can still do once confined (worker.confine): the system
call filter (xdpd/confine.c) on its own, then the whole confinement as a
worker runs it: an unprivileged uid and gid, no capabilities, not dumpable,
under the filter.  Each runs in a child interpreter: none of it can be
undone in this one."""
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from xdpd.kernel import _confine

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: only root can become another user")

# Tries each thing a hostile worker would, and what its loop needs, after
# confining itself; prints {what: "ok" | errno name}.
CHILD = r"""
import ctypes, errno, fcntl, json, mmap, os, socket, sys
import xdpd.datapath.worker as worker
from xdpd.kernel import _confine

args = json.loads(sys.argv[1])
if args["spec"] and args.get("user_only"):
    from xdpd.kernel import privileges
    privileges.drop_all_capabilities(args["spec"]["uid"], args["spec"]["gid"])
elif args["spec"]:
    worker.confine(worker.WorkerSpec(**args["spec"]))
else:
    ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)   # PR_SET_NO_NEW_PRIVS
    _confine.install()
libc = ctypes.CDLL(None, use_errno=True)

def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def fork():
    if os.fork() == 0:
        os._exit(0)

def ptrace_me():
    if libc.ptrace(0, 0, 0, 0) != 0:        # PTRACE_TRACEME
        raise OSError(ctypes.get_errno(), "ptrace")

out = {
    # what a worker's loop and interpreter need
    "read a file": attempt(lambda: open(args["root_file"], "rb").close()),
    "map memory": attempt(lambda: mmap.mmap(-1, 1 << 20).close()),
    "write stderr": attempt(lambda: os.write(2, b"")),
    "list a directory": attempt(lambda: os.listdir("/")),
    "late import": attempt(lambda: __import__("xdpd.control.sdnotify")),
    "set its title": attempt(lambda: __import__("xdpd.datapath._fastpath").
                             datapath._fastpath.set_proctitle("xdpd: test")),
    # what a hostile worker would try
    "append to a root file": attempt(lambda: open(args["root_file"], "a").close()),
    "create a file": attempt(lambda: open(args["new_file"], "x").close()),
    "signal the parent": attempt(lambda: os.kill(os.getppid(), 0)),
    "signal init": attempt(lambda: os.kill(1, 0)),
}
if not args.get("user_only"):       # would work there: the filter refuses them
    out.update({
        "execve": attempt(lambda: os.execv("/bin/true", ["true"])),
        "fork": attempt(fork),
        "open a socket": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
        "ptrace": attempt(ptrace_me),
        "steal a terminal": attempt(lambda: fcntl.ioctl(2, 0x5412, b"x")),     # TIOCSTI
    })
with open("/proc/self/status") as f:
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
out["status"] = {k: status[k] for k in ("Uid", "Gid", "Groups", "CapEff", "CapPrm",
                                        "CapBnd", "NoNewPrivs", "Seccomp")}
out["status owner"] = os.stat(f"/proc/{os.getpid()}/status").st_uid
print(json.dumps(out))
"""


@pytest.fixture
def open_dir():
    """A directory anyone may enter (tmp_path's parents are root's alone),
    holding a file root owns that others may read."""
    top = tempfile.mkdtemp(prefix="xdpd-confine-", dir="/tmp")
    os.chmod(top, 0o755)
    path = os.path.join(top, "root-owned")
    with open(path, "w"):
        pass
    os.chmod(path, 0o666 if os.geteuid() else 0o644)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_confined(top: str, spec: dict | None, user_only: bool = False) -> dict:
    args = {"spec": spec, "root_file": os.path.join(top, "root-owned"),
            "new_file": os.path.join(top, "new"), "user_only": user_only}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


NEEDED = ("read a file", "map memory", "write stderr", "list a directory", "late import",
          "set its title")
REFUSED_BY_FILTER = ("execve", "fork", "open a socket", "ptrace", "steal a terminal")


def test_the_filter_allows_the_loop_and_refuses_the_rest(open_dir):
    out = run_confined(open_dir, None)
    assert {k: out[k] for k in NEEDED} == dict.fromkeys(NEEDED, "ok")
    assert {k: out[k] for k in REFUSED_BY_FILTER} == dict.fromkeys(REFUSED_BY_FILTER, "EPERM")
    # opening for writing fails at the filter, whoever owns the file
    assert out["append to a root file"] == out["create a file"] == "EPERM"
    assert out["signal the parent"] == "EPERM"
    assert out["status"]["Seccomp"] == "2" and out["status"]["NoNewPrivs"] == "1"


def test_the_filter_names_what_it_allows():
    allowed = _confine.allowed()
    assert {"sendto", "recvfrom", "read", "write", "mmap", "openat", "ioctl"} <= set(allowed)
    assert not {"execve", "fork", "clone", "socket", "kill", "ptrace", "bpf",
                "setuid", "open", "openat2"} & set(allowed)


def nobody_spec() -> dict:
    nobody = pwd.getpwnam("nobody")
    return dict(id=0, netdev="in0", queue=0, cpu=0, xsk_fd=-1, umem_fd=-1, umem_size=0,
                control_fd=-1, control_size=0, tables_fd=-1, eventfds=(), rings=(0, 0, 0, 0),
                layout=(1, 1, 2048, 1), batch_size=64, spin=False, spin_max_us=0, busy_poll=False,
                budget_us=1000, parent_pid=os.getpid(), uid=nobody.pw_uid, gid=nobody.pw_gid)


@needs_root
def test_the_user_alone_keeps_a_worker_from_root_files_and_processes(open_dir):
    """Without the filter (the uid change and the capabilities alone): the
    kernel's permission checks refuse what the filter would refuse first."""
    out = run_confined(open_dir, nobody_spec(), user_only=True)
    assert out["status"]["Seccomp"] == "0"
    assert out["append to a root file"] == out["create a file"] == "EACCES"
    assert out["signal the parent"] == out["signal init"] == "EPERM"
    assert out["status owner"] == 0


@needs_root
def test_a_confined_worker_is_an_unprivileged_user_and_cannot_reach_root(open_dir):
    nobody = pwd.getpwnam("nobody")
    out = run_confined(open_dir, nobody_spec())
    uid, gid = str(nobody.pw_uid), str(nobody.pw_gid)
    assert out["status"] == {"Uid": "\t".join([uid] * 4), "Gid": "\t".join([gid] * 4),
                             "Groups": gid, "CapEff": "0" * 16, "CapPrm": "0" * 16,
                             "CapBnd": "0" * 16, "NoNewPrivs": "1", "Seccomp": "2"}
    assert out["status owner"] == 0         # not dumpable: its /proc is root's
    assert {k: out[k] for k in NEEDED} == dict.fromkeys(NEEDED, "ok")
    assert out["append to a root file"] == out["create a file"] == "EPERM"
    assert out["signal the parent"] == out["signal init"] == "EPERM"
    assert {k: out[k] for k in REFUSED_BY_FILTER} == dict.fromkeys(REFUSED_BY_FILTER, "EPERM")


@needs_root
def test_a_worker_refuses_to_stay_root():
    spec = dict(id=0, netdev="in0", queue=0, cpu=0, xsk_fd=-1, umem_fd=-1, umem_size=0,
                control_fd=-1, control_size=0, tables_fd=-1, eventfds=(), rings=(0, 0, 0, 0),
                layout=(1, 1, 2048, 1), batch_size=64, spin=False, spin_max_us=0, busy_poll=False,
                budget_us=1000, parent_pid=os.getpid(), uid=0, gid=0)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(
        {"spec": spec, "root_file": "/nonexistent", "new_file": "/nonexistent"})],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "refusing to run a worker as uid 0" in out.stderr
