"""Privileges of a running xdpd in the veth lab: every worker drops all its
capabilities once its rings are mapped (xdpd/privileges.py) and still
forwards (copy-mode TX by sendto(), RX, poll, eventfd wake-ups, shared
memory), a replaced worker drops them again, the supervisor keeps its own;
the control socket is root's alone."""
import errno
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile

import pytest
from integration_helpers import ROOT_ONLY, poll_until

from xdpd import exitcodes
from xdpd.control.server import request
from xdpd.kernel.privileges import CAP_FIELDS
from xdpd.lab.daemon import forward_config
from xdpd.lab.traffic import SinkProcess, send_in_ns

pytestmark = ROOT_ONLY

N = 5000


def status_fields(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def assert_no_capabilities(pid: int, user: str = "nobody") -> None:
    """What a worker or standby is once confined (worker.confine): the
    workers' user and its group alone, no capability, no_new_privs, its
    system call filter, not dumpable (its /proc files are root's)."""
    fields = status_fields(pid)
    held = {k: fields[k] for k in CAP_FIELDS if int(fields[k], 16) != 0}
    assert held == {}, (pid, fields.get("Name"), held)
    assert fields["NoNewPrivs"] == "1", (pid, fields["NoNewPrivs"])
    pw = pwd.getpwnam(user)
    assert fields["Uid"].split() == [str(pw.pw_uid)] * 4, (pid, fields["Uid"])
    assert fields["Gid"].split() == [str(pw.pw_gid)] * 4, (pid, fields["Gid"])
    assert fields["Groups"].split() == [str(pw.pw_gid)], (pid, fields["Groups"])
    assert fields["Seccomp"] == "2" and fields["Seccomp_filters"] == "1", (pid, fields)
    assert os.stat(f"/proc/{pid}/status").st_uid == 0, pid       # not dumpable


def worker_pids(d) -> dict[str, int]:
    """The supervisor's own account of its running workers (a standby
    process waiting to take over is not one of them)."""
    return {w["name"]: w["pid"] for w in d.status()["workers"] if w["state"] == "running"}


def forward_both_ways(lab, tag: int) -> tuple[int, int]:
    """N packets gen -> in0 -> out0 -> sink and N back sink -> out0 -> in0 -> gen,
    one direction after the other; (received at sink, received at gen)."""
    got = []
    for src_ns, src, dst_ns, dst, to_mac, t in (
            (lab.gen_ns, lab.GEN_DEV, lab.sink_ns, lab.SINK_DEV, lab.MACS[lab.IN_DEV], tag),
            (lab.sink_ns, lab.SINK_DEV, lab.gen_ns, lab.GEN_DEV, lab.MACS[lab.OUT_DEV], tag + 1)):
        with SinkProcess(lab, dst_ns, dst, tag=t, expect=N, idle=1.0) as sink:
            send_in_ns(lab, src_ns, src, dst_mac=to_mac, count=N, tag=t)
            got.append(sink.result(timeout=20)["received"])
    return got[0], got[1]


@pytest.mark.parametrize("workers", ["", "workers:\n  busy_poll: true\n",
                                     "workers:\n  idle: spin\n"],
                         ids=["sleep", "busy_poll", "spin"])
def test_workers_forward_without_any_capability(lab, start_daemon, workers):
    d = start_daemon(forward_config(lab, extra=workers))
    pids = worker_pids(d)
    assert len(pids) == 4, pids
    for pid in pids.values():
        assert_no_capabilities(pid)
    # the supervisor keeps what it needs for reloads and replacements
    supervisor = status_fields(d.proc.pid)
    assert int(supervisor["CapEff"], 16) == int(status_fields(os.getpid())["CapEff"], 16) != 0

    status = d.status()
    assert {i["socket_mode"] for i in status["interfaces"]} == {"copy"}   # veth: sendto() TX
    assert forward_both_ways(lab, tag=71) == (N, N)
    # nothing needed a capability on the way: no worker died or was replaced
    assert worker_pids(d) == pids, d.log()
    assert d.scrape().value("xdpd_worker_restarts_total") == 0, d.log()
    assert "cannot drop capabilities" not in d.log()


def test_a_standby_waits_without_any_capability(lab, start_daemon):
    """A standby holds the worker's descriptors while it waits: it drops
    every capability before it maps anything or waits for "go"."""
    d = start_daemon(forward_config(lab))
    standbys = poll_until(lambda: all(w["standby_ready"] for w in d.status()["workers"])
                          and [w["standby_pid"] for w in d.status()["workers"]],
                          15, "every standby ready")
    assert len(standbys) == 4
    for pid in standbys:
        assert_no_capabilities(pid)


def test_a_replaced_worker_drops_them_again(lab, start_daemon):
    d = start_daemon(forward_config(lab))
    old = worker_pids(d)
    assert len(old) == 4, old
    os.kill(old["in0/q0"], signal.SIGKILL)

    def replaced():
        now = worker_pids(d)
        return now if len(now) == 4 and now["in0/q0"] != old["in0/q0"] else None
    new = poll_until(replaced, 15, "in0/q0 replaced and every worker running")
    assert_no_capabilities(new["in0/q0"])
    assert forward_both_ways(lab, tag=73) == (N, N)
    assert d.stop() == exitcodes.OK, d.log()
    assert "Traceback" not in d.log()


def test_the_control_socket_is_roots_alone(lab, start_daemon, tmp_path):
    # a directory xdpd has to create itself, as /run/xdpd is without systemd
    socket_path = str(tmp_path / "run" / "xdpd.sock")
    d = start_daemon(forward_config(lab, extra=f'control:\n  socket: "{socket_path}"\n'))
    sock, directory = os.stat(socket_path), os.stat(os.path.dirname(socket_path))
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    assert stat.S_ISDIR(directory.st_mode) and stat.S_IMODE(directory.st_mode) == 0o700
    assert sock.st_uid == directory.st_uid == 0
    assert request(socket_path, "status")["pid"] == d.proc.pid
    assert d.stop() == exitcodes.OK, d.log()
    assert not os.path.exists(os.path.dirname(socket_path))     # what it made, it removes


# a client that imports nothing of xdpd: run as another user, it need not
# read the checkout
ASK = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect": e.errno})); sys.exit()
s.sendall(json.dumps({"command": sys.argv[2]}).encode() + b"\n")
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.decode())
"""


def ask_as(user: str, group: str, socket_path: str, command: str) -> dict:
    out = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
                          "--", "/usr/bin/python3", "-I", "-c", ASK, socket_path, command],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="needs setpriv (util-linux) and /usr/bin/python3")
def test_a_status_group_may_read_the_status_and_nobody_else_may_ask_anything(lab,
                                                                            start_daemon):
    import grp
    try:
        grp.getgrnam("nogroup")
    except KeyError:
        pytest.skip("no group 'nogroup' to give the status to")
    # a directory others may traverse, as /run is, holding the one xdpd makes
    top = tempfile.mkdtemp(prefix="xdpd-status-", dir="/tmp")
    os.chmod(top, 0o755)
    socket_path = os.path.join(top, "run", "xdpd.sock")
    try:
        # the workers run as daemon here: nobody is the status reader
        d = start_daemon(forward_config(lab, extra=f'control:\n  socket: "{socket_path}"\n'
                                                    '  status_group: nogroup\n'
                                                    'workers:\n  user: daemon\n'))
        sock, directory = os.stat(socket_path), os.stat(os.path.dirname(socket_path))
        assert stat.S_IMODE(sock.st_mode) == 0o660 and stat.S_IMODE(directory.st_mode) == 0o750
        assert sock.st_gid == directory.st_gid == grp.getgrnam("nogroup").gr_gid
        status = ask_as("nobody", "nogroup", socket_path, "status")
        assert status["ok"] and status["result"]["pid"] == d.proc.pid
        assert ask_as("nobody", "nogroup", socket_path, "reload") == {
            "ok": False, "error": "permission denied: members of control.status_group may "
                                  "ask only status"}
        # another user, not in the group: the directory keeps it out
        assert ask_as("bin", "bin", socket_path, "status") == {"connect": errno.EACCES}
        assert d.stop() == exitcodes.OK, d.log()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="needs setpriv (util-linux) and /usr/bin/python3")
def test_the_workers_user_is_refused_even_in_the_status_group(lab, start_daemon):
    """A process of the workers' user (a worker, or anything that took one
    over) may not use the control socket, even where its group would let
    it ask status: it could otherwise send `reload` with any config_text."""
    top = tempfile.mkdtemp(prefix="xdpd-status-", dir="/tmp")
    os.chmod(top, 0o755)
    socket_path = os.path.join(top, "run", "xdpd.sock")
    try:
        d = start_daemon(forward_config(lab, extra=f'control:\n  socket: "{socket_path}"\n'
                                                    '  status_group: nogroup\n'))
        answer = ask_as("nobody", "nogroup", socket_path, "status")
        assert answer["ok"] is False, answer
        assert "runs as the workers' user or group" in answer["error"], answer
        assert d.stop() == exitcodes.OK, d.log()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_worker_reports_its_own_cpu_and_its_user_cannot_trace_it(lab, start_daemon):
    """The supervisor reads no worker's /proc (under the unit it could not:
    another uid, not dumpable): each worker reports its CPU time and memory
    in its slot.  A process of the same uid cannot read the worker's memory
    or environment: only CAP_SYS_PTRACE could."""
    d = start_daemon(forward_config(lab))
    pids = worker_pids(d)
    assert forward_both_ways(lab, tag=75) == (N, N)

    def reported():
        cpu = d.scrape().by("xdpd_worker_cpu_seconds_total", "netdev", "queue")
        return cpu if len(cpu) == 4 and all(v > 0 for v in cpu.values()) else None
    poll_until(reported, 15, "every worker's CPU time reported")
    assert "rss" in d.log() and "unique" in d.log(), d.log()    # the start-up memory line
    pid = pids["in0/q0"]
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                          "--", "cat", f"/proc/{pid}/environ"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "Permission denied" in out.stderr, out
