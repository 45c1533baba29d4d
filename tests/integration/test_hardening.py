"""xdpd under the restrictions of deploy/systemd/xdpd.service, without a
systemd manager: the real daemon in the veth lab, started, forwarding,
reloaded and stopped

- with the unit's capability bounding set only (setpriv), and failing
  cleanly (exit 71, one message, no traceback) with any one of them missing;
- under strace, checking every system call of the supervisor, its workers
  and the ExecStartPre/ExecReload commands against SystemCallFilter=, every
  socket family against RestrictAddressFamilies=, and what the other
  directives forbid;
- under a seccomp filter equal to systemd 252's MemoryDenyWriteExecute=.

Everything is read from the unit file, so the unit and these tests cannot
drift apart."""
import ctypes
import errno
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys

import psutil
import pytest
from integration_helpers import ROOT_ONLY, poll_until, xdp_attached

from xdpd import exitcodes
from xdpd.lab.daemon import DaemonError, LabDaemon, forward_config
from xdpd.lab.traffic import SinkProcess, child_env, send_in_ns

pytestmark = ROOT_ONLY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "deploy", "systemd", "xdpd.service")
N = 2000


def unit_service() -> dict[str, list[str]]:
    """The unit's [Service] section: {key: [values]}."""
    values: dict[str, list[str]] = {}
    section = None
    with open(UNIT) as f:
        text = re.sub(r"\\\n", " ", f.read())
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def unit_words(key: str) -> list[str]:
    return " ".join(unit_service().get(key, [])).split()


def unit_flag(key: str) -> bool:
    return unit_service().get(key, ["no"])[-1] in ("yes", "true", "1", "on", "strict")


# --- capabilities -----------------------------------------------------------

def cap_numbers() -> dict[str, int]:
    header = "/usr/include/linux/capability.h"
    if not os.path.exists(header):
        pytest.skip("needs linux/capability.h (linux-libc-dev)")
    with open(header) as f:
        return {m.group(1): int(m.group(2)) for m in
                re.finditer(r"^#define (CAP_[A-Z_]+)\s+(\d+)\s*$", f.read(), re.M)}


def setpriv(caps: list[str]) -> list[str]:
    """Run as root with only `caps` in the bounding set, nothing inheritable,
    no_new_privs: what CapabilityBoundingSet= and NoNewPrivileges= do."""
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux)")
    keep = "".join(f",+{c.removeprefix('CAP_').lower()}" for c in caps)
    return ["setpriv", f"--bounding-set=-all{keep}", "--inh-caps=-all", "--no-new-privs", "--"]


def memlock_like_the_unit() -> tuple[list[str], list[str]]:
    """(command prefix, extra capabilities) that give the daemon what the
    unit's LimitMEMLOCK=infinity gives it.

    Where this process may raise RLIMIT_MEMLOCK, prlimit does exactly that.
    Where it may not (a container without CAP_SYS_RESOURCE and a fixed hard
    limit), CAP_IPC_LOCK stands in for it: the kernel's only use of the limit
    for xdpd is the UMEM charge (xdp_umem_account_pages), which it skips for
    a CAP_IPC_LOCK holder and always passes under an infinite limit."""
    assert unit_service()["LimitMEMLOCK"] == ["infinity"]
    raise_it = ["prlimit", "--memlock=unlimited:unlimited", "--"]
    if shutil.which("prlimit") and subprocess.run(raise_it + ["true"],
                                                  capture_output=True).returncode == 0:
        return raise_it, []
    return [], ["CAP_IPC_LOCK"]


def mask(caps: list[str]) -> int:
    numbers = cap_numbers()
    return sum(1 << numbers[c] for c in caps)


def proc_caps(pid: int) -> tuple[int, int]:
    """(effective, bounding) capability masks of a process."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["CapEff"], 16), int(fields["CapBnd"], 16)


def forward_and_count(lab, tag: int) -> int:
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=tag, expect=N, idle=1.0) as sink:
        send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                   count=N, tag=tag)
        return sink.result(timeout=20)["received"]


def test_forwards_with_only_the_units_capabilities(lab):
    caps = unit_words("CapabilityBoundingSet")
    assert caps
    prefix, extra = memlock_like_the_unit()
    with LabDaemon(lab, forward_config(lab), wrap=prefix + setpriv(caps + extra)) as d:
        d.start()
        # the supervisor's account: a standby process is not a worker yet
        workers = {w["name"]: w["pid"] for w in d.status()["workers"]}
        assert len(workers) == 4, workers
        # the supervisor holds the unit's set and no more, the workers
        # nothing at all (xdpd/privileges.py; tests/integration/test_worker_privileges.py)
        eff, bnd = proc_caps(d.proc.pid)
        assert bnd == mask(caps + extra), hex(bnd)
        assert eff == bnd, hex(eff)
        for pid in workers.values():
            assert proc_caps(pid) == (0, 0), pid
        assert forward_and_count(lab, tag=61) == N
        assert d.stop() == exitcodes.OK, d.log()
        assert "Traceback" not in d.log()
    assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)
    assert not xdp_attached(lab, lab.dut_ns, lab.OUT_DEV)


# What start-up reports without each capability: the step that needs it.
WITHOUT = {
    "CAP_NET_RAW": "socket(AF_XDP)",
    "CAP_BPF": "load rr_redirect",
    "CAP_NET_ADMIN": "load rr_redirect",   # the XSKMAP needs it
    "CAP_SETPCAP": "PR_CAPBSET_DROP",      # a worker empties its bounding set
    "CAP_SETGID": "setgroups",             # a worker becomes workers.group...
    "CAP_SETUID": "setresuid",             # ...and workers.user
}


@pytest.mark.parametrize("missing", sorted(WITHOUT))
def test_each_capability_is_needed_and_its_absence_is_reported(lab, missing):
    caps = unit_words("CapabilityBoundingSet")
    assert missing in caps
    prefix, extra = memlock_like_the_unit()
    with LabDaemon(lab, forward_config(lab),
                   wrap=prefix + setpriv([c for c in caps + extra if c != missing])) as d:
        with pytest.raises(DaemonError):
            d.start(ready_timeout=20)
        assert d.proc.returncode == exitcodes.OSERR, d.log()
        log = d.log()
    assert "Traceback" not in log
    assert WITHOUT[missing] in log and "EPERM" in log, log
    # what it had attached before the failing step is undone
    assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)
    assert not xdp_attached(lab, lab.dut_ns, lab.OUT_DEV)


def test_without_cap_kill_the_workers_cannot_be_signalled_and_that_is_reported(lab):
    """CAP_KILL is needed once the daemon signals its workers (another uid):
    start-up does not, a stop does.  Without it the stop says so and still
    ends; the workers follow through their parent-death signal."""
    caps = unit_words("CapabilityBoundingSet")
    assert "CAP_KILL" in caps
    prefix, extra = memlock_like_the_unit()
    with LabDaemon(lab, forward_config(lab),
                   wrap=prefix + setpriv([c for c in caps + extra if c != "CAP_KILL"])) as d:
        d.start()
        workers = [w["pid"] for w in d.status()["workers"]]
        assert forward_and_count(lab, tag=62) == N
        d.stop()
        log = d.log()
        assert "Traceback" not in log
        assert "needs CAP_KILL" in log and "EPERM" in log, log
        poll_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers), 10,
                   "the workers gone after the supervisor")
    assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)


def test_without_an_unlimited_memlock_the_umem_is_refused(lab):
    """Why the unit has LimitMEMLOCK=infinity: without CAP_IPC_LOCK the
    kernel charges the UMEM (48 MiB here) to RLIMIT_MEMLOCK."""
    if not shutil.which("prlimit"):
        pytest.skip("needs prlimit (util-linux)")
    caps = unit_words("CapabilityBoundingSet")
    assert "CAP_IPC_LOCK" not in caps
    one_mib = 1 << 20
    with LabDaemon(lab, forward_config(lab),
                   wrap=["prlimit", f"--memlock={one_mib}:{one_mib}", "--"] + setpriv(caps)) as d:
        with pytest.raises(DaemonError):
            d.start(ready_timeout=20)
        assert d.proc.returncode == exitcodes.OSERR, d.log()
        log = d.log()
    assert "Traceback" not in log
    assert "register UMEM" in log and "ENOBUFS" in log, log
    assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)


# --- system calls, socket families, the other directives ----------------------

def _unit_tests_module():
    """tests/unit/test_systemd_unit.py: the one parser of systemd-analyze's
    syscall groups, shared rather than written twice."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "unit", "test_systemd_unit.py")
    spec = importlib.util.spec_from_file_location("xdpd_test_systemd_unit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def syscall_groups() -> dict[str, list[str]]:
    if not shutil.which("systemd-analyze"):
        pytest.skip("needs systemd-analyze (package systemd)")
    return _unit_tests_module().syscall_groups()


def expand(entry: str, groups: dict[str, list[str]]) -> set[str]:
    return _unit_tests_module().expand(entry, groups)


def allowed_syscalls() -> set[str]:
    groups = syscall_groups()
    entries = unit_words("SystemCallFilter")
    assert entries and not any(e.startswith("~") for e in entries)
    return set().union(*(expand(e.split(":")[0], groups) for e in entries))


# Calls that other directives refuse even when SystemCallFilter= allows them.
FORBIDDEN_BY = {
    "ProtectClock": {"settimeofday", "clock_settime", "clock_adjtime", "adjtimex"},
    "ProtectKernelModules": {"init_module", "finit_module", "delete_module"},
    "ProtectKernelLogs": {"syslog"},
    "ProtectHostname": {"sethostname", "setdomainname"},
    "RestrictNamespaces": {"setns", "unshare"},
}


# MemoryDenyWriteExecute= as systemd 252 applies it (seccomp, EPERM):
# mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC and
# shmat with SHM_EXEC are refused.  Newer systemd on Linux 6.3+ uses
# PR_SET_MDWE instead, which refuses less (mprotect of a mapping that is
# already executable).
#          audit arch, mmap, mprotect, pkey_mprotect, shmat
_MDWE_NRS = {"x86_64": (0xC000003E, 9, 10, 329, 30),
             "aarch64": (0xC00000B7, 222, 226, 288, 196)}
MDWE_EXEC = r"""
import ctypes, errno, os, struct, sys
arch, nr_mmap, nr_mprotect, nr_pkey, nr_shmat = (int(x) for x in sys.argv[1:6])
LD_ABS, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06
ALLOW, DENY = 0x7FFF0000, 0x00050000 | errno.EPERM
prog = [(LD_ABS, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, ALLOW)]
for nr, bits in ((nr_mmap, 0x6), (nr_mprotect, 0x4), (nr_pkey, 0x4), (nr_shmat, 0o100000)):
    prog += [(LD_ABS, 0, 0, 0), (JEQ, 0, 5, nr),
             (LD_ABS, 0, 0, 32), (AND, 0, 0, bits), (JEQ, 0, 1, bits),
             (RET, 0, 0, DENY), (RET, 0, 0, ALLOW)]
prog.append((RET, 0, 0, ALLOW))
code = b"".join(struct.pack("HBBI", *i) for i in prog)
buf = ctypes.create_string_buffer(code)
fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
fbuf = ctypes.create_string_buffer(fprog)
# PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, fbuf, 0, 0):
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[6], sys.argv[6:])
"""


def mdwe_wrap() -> list[str]:
    """Prefix that runs a command under MemoryDenyWriteExecute=yes's filter."""
    nrs = _MDWE_NRS.get(platform.machine())
    if nrs is None:
        pytest.skip(f"no MemoryDenyWriteExecute= filter for {platform.machine()} here")
    return [sys.executable, "-c", MDWE_EXEC, *map(str, nrs)]


def unit_wrap() -> list[str]:
    return mdwe_wrap() if unit_flag("MemoryDenyWriteExecute") else []


CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")
UNFINISHED = " <unfinished ...>"


def read_trace(path: str) -> list[tuple[str, str]]:
    """(syscall name, arguments and result) for every call in an strace -f
    file; a call another thread interrupted is put back together."""
    calls = []
    pending: dict[str, tuple[str, str]] = {}        # pid -> (name, first half)
    unparsed = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if m := RESUMED.match(line):
                pid, name, rest = m.groups()
                first = pending.pop(pid, (name, ""))[1]
                calls.append((name, first + rest))
            elif m := CALL.match(line):
                pid, name, rest = m.groups()
                if rest.endswith(UNFINISHED):
                    pending[pid] = (name, rest[:-len(UNFINISHED)])
                else:
                    calls.append((name, rest))
            elif not re.match(r"^\d+\s+(---|\+\+\+)", line):     # signals, exits
                unparsed.append(line)
    assert not unparsed, f"strace lines not understood: {unparsed[:5]}"
    calls.extend(pending.values())                  # never returned (exit, exit_group)
    return calls


def strace(out: str) -> list[str]:
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    return ["strace", "-f", "-qq", "-e", "trace=all", "-o", out]


def traced_daemon_pid(strace_pid: int) -> int:
    def child():
        kids = psutil.Process(strace_pid).children()
        return kids[0].pid if kids else None
    return poll_until(child, 10, "the traced xdpd")


def test_system_calls_and_socket_families_are_allowed(lab, tmp_path):
    allowed = allowed_syscalls()
    families = set(unit_words("RestrictAddressFamilies"))
    wrap = unit_wrap()
    traces = {}

    # ExecStartPre=: the same sandbox applies to it
    traces["check-config"] = str(tmp_path / "check-config.trace")
    cfg = tmp_path / "xdpd.yaml"
    cfg.write_text(forward_config(lab))
    out = subprocess.run(lab.nsenter(lab.dut_ns) + strace(traces["check-config"]) + wrap
                         + [sys.executable, "-m", "xdpd", "check-config", str(cfg)],
                         capture_output=True, text=True, env=child_env(), timeout=60)
    assert out.returncode == 0, out.stderr

    traces["run"] = str(tmp_path / "run.trace")
    with LabDaemon(lab, forward_config(lab), wrap=strace(traces["run"]) + wrap) as d:
        runtime_dir = os.path.dirname(d.config_path)     # stands in for /run/xdpd
        d.start()
        pid = traced_daemon_pid(d.proc.pid)
        if wrap:                                      # the filter is really on
            with open(f"/proc/{pid}/status") as f:
                assert re.search(r"^Seccomp:\s+2$", f.read(), re.M)
        assert forward_and_count(lab, tag=62) == N

        # a reload by SIGHUP (unchanged file), then ExecReload='s `xdpd reload`
        # with a file that removes an egress queue (its worker drained, stopped)
        os.kill(pid, signal.SIGHUP)
        poll_until(lambda: d.status().get("last_reload"), 20, "the SIGHUP reload")
        out0 = f"- name: {lab.OUT_DEV}\n    queues: all"
        assert out0 in forward_config(lab)
        d.write_config(forward_config(lab).replace(out0, out0.replace("all", "[0]")))
        traces["reload"] = str(tmp_path / "reload.trace")
        out = subprocess.run(strace(traces["reload"]) + wrap
                             + [sys.executable, "-m", "xdpd", "reload",
                                "--socket", d.socket_path],
                             capture_output=True, text=True, env=child_env(), timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr + d.log()
        poll_until(lambda: len(d.worker_pids()) == 3, 10, "three workers")
        assert forward_and_count(lab, tag=63) == N

        # stop the daemon itself: SIGTERM to strace would detach the workers
        os.kill(pid, signal.SIGTERM)
        assert d.proc.wait(30) == exitcodes.OK, d.log()
        assert "Traceback" not in d.log()

    calls = {name: read_trace(path) for name, path in traces.items()}
    everything = [c for cs in calls.values() for c in cs]
    used = {name for name, _ in everything}
    # the filter checks before the call runs: a refused call is refused
    # even where strace shows it failing for another reason
    assert used - allowed == set(), f"not in SystemCallFilter=: {sorted(used - allowed)}"
    assert "bpf" in used and "memfd_create" in used      # the trace saw the real work

    used_families = {re.match(r"\s*(\w+)", args).group(1)
                     for name, args in everything if name in ("socket", "socketpair")}
    assert "AF_XDP" in used_families
    assert used_families <= families, \
        f"not in RestrictAddressFamilies=: {sorted(used_families - families)}"

    for directive, forbidden in FORBIDDEN_BY.items():
        if unit_flag(directive):
            assert not used & forbidden, f"{directive}=yes refuses {used & forbidden}"
    if unit_flag("RestrictNamespaces"):
        assert not [a for n, a in everything if n.startswith("clone") and "CLONE_NEW" in a]
    if unit_flag("RestrictRealtime"):
        assert not [a for n, a in everything if n.startswith("sched_set")
                    and re.search(r"SCHED_(FIFO|RR|DEADLINE)", a)]
    if unit_flag("LockPersonality"):
        # querying (0xffffffff) is allowed, changing is not
        assert not [a for n, a in everything if n == "personality"
                    and not a.startswith("0xffffffff")]

    opened = [(re.search(r'"([^"]*)"', a).group(1), a) for n, a in everything
              if n in ("open", "openat", "openat2", "creat") and '"' in a]
    if unit_flag("PrivateDevices"):
        devices = sorted({p for p, _ in opened if p.startswith("/dev/")})
        assert devices == [], f"PrivateDevices=yes hides {devices}"
    written = [p for p, a in opened if re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", a)]
    written += [re.search(r'"([^"]*)"', a).group(1) for n, a in everything
                if n in ("mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat2",
                         "rmdir", "mknod", "mknodat", "symlink", "link") and '"' in a]
    written += re.findall(r'sun_path="([^"]+)"', " ".join(a for n, a in everything
                                                          if n == "bind"))
    # ReadWritePaths= opens a subtree again (the CPUs' wake-up latency caps)
    writable = tuple(p.rstrip("/") + "/" for v in unit_service().get("ReadWritePaths", [])
                     for p in v.split())
    if unit_flag("ProtectKernelTunables"):
        tunables = [p for p in written if p.startswith(("/proc/sys", "/sys"))
                    and not p.startswith(writable)]
        assert tunables == [], f"ProtectKernelTunables=yes makes these read-only: {tunables}"
    if unit_service().get("ProtectSystem") == ["strict"]:
        # only the RuntimeDirectory (and PrivateTmp's /tmp) is writable;
        # Python skips bytecode caching quietly on a read-only tree
        # (strict leaves the API file systems /dev, /proc and /sys to their
        # own directives, above)
        outside = sorted({p for p in written
                          if not (p == runtime_dir or p.startswith(runtime_dir + "/"))
                          and not p.startswith(("/dev/", "/proc/", "/sys/") + writable)
                          and "/__pycache__/" not in p})
        assert outside == [], f"ProtectSystem=strict: written outside {runtime_dir}: {outside}"

    if unit_flag("MemoryDenyWriteExecute"):
        mmaps = [a for n, a in everything if n == "mmap"
                 and "PROT_WRITE" in a and "PROT_EXEC" in a]
        # libffi asks for a W+X page first and falls back to a memfd mapped
        # twice when refused; nothing of the kind may have been granted
        assert all(re.search(r"= -1 EPERM", a) for a in mmaps), mmaps
        mprotects = [a for n, a in everything if n in ("mprotect", "pkey_mprotect")
                     and "PROT_EXEC" in a]
        assert all(re.search(r"= -1 EPERM", a) for a in mprotects), mprotects


# --- PrivateMounts=, ProtectProc=, IPAddressDeny=/IPAddressAllow= --------------

def cgroup2_root() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    pytest.skip("needs a cgroup2 mount (IPAddressDeny= is a cgroup BPF filter)")


# struct bpf_insn { __u8 code; __u8 dst_reg:4, src_reg:4; __s16 off; __s32 imm; }
_LDX_W, _LDX_B, _MOV_X, _MOV_K, _ADD_K = 0x61, 0x71, 0xBF, 0xB7, 0x07
_JEQ_K, _JNE_K, _JA, _CALL, _EXIT = 0x15, 0x55, 0x05, 0x85, 0x95
_SKB_LOAD_BYTES = 26                    # bpf_skb_load_bytes(skb, offset, to, len)
_SKB_PROTOCOL = 16                      # offsetof(struct __sk_buff, protocol)
BPF_PROG_TYPE_CGROUP_SKB = 8
BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS = 0, 1


def localhost_only_program(egress: bool) -> bytes:
    """A cgroup_skb program with the verdicts of IPAddressDeny=any plus
    IPAddressAllow=localhost (systemd's bpf-firewall): an IPv4 packet passes
    if its source (ingress) or destination (egress) is in 127.0.0.0/8, an
    IPv6 one if it is ::1; any other IP packet is dropped; non-IP passes."""
    v4_off = 16 if egress else 12       # struct iphdr: daddr, saddr
    v6_off = 24 if egress else 8        # struct ipv6hdr: daddr, saddr

    def load(offset: int, size: int) -> list:       # to the stack at r10 - 16
        return [(_MOV_X, 1, 6, 0, 0), (_MOV_K, 2, 0, 0, offset), (_MOV_X, 3, 10, 0, 0),
                (_ADD_K, 3, 0, 0, -16), (_MOV_K, 4, 0, 0, size),
                (_CALL, 0, 0, 0, _SKB_LOAD_BYTES), (_JNE_K, 0, 0, "deny", 0)]
    ipv6_one = int.from_bytes(b"\0\0\0\1", sys.byteorder)
    prog = [(_MOV_X, 6, 1, 0, 0),
            (_LDX_W, 2, 6, _SKB_PROTOCOL, 0),
            (_JEQ_K, 2, 0, "ipv4", socket.htons(0x0800)),
            (_JEQ_K, 2, 0, "ipv6", socket.htons(0x86DD)),
            (_JA, 0, 0, "allow", 0),
            "ipv4", *load(v4_off, 4),
            (_LDX_B, 2, 10, -16, 0), (_JEQ_K, 2, 0, "allow", 127), (_JA, 0, 0, "deny", 0),
            "ipv6", *load(v6_off, 16),
            (_LDX_W, 2, 10, -16, 0), (_JNE_K, 2, 0, "deny", 0),
            (_LDX_W, 2, 10, -12, 0), (_JNE_K, 2, 0, "deny", 0),
            (_LDX_W, 2, 10, -8, 0), (_JNE_K, 2, 0, "deny", 0),
            (_LDX_W, 2, 10, -4, 0), (_JNE_K, 2, 0, "deny", ipv6_one),
            "allow", (_MOV_K, 0, 0, 0, 1), (_EXIT, 0, 0, 0, 0),
            "deny", (_MOV_K, 0, 0, 0, 0), (_EXIT, 0, 0, 0, 0)]
    insns = [i for i in prog if not isinstance(i, str)]
    labels, n = {}, 0
    for item in prog:
        if isinstance(item, str):
            labels[item] = n
        else:
            n += 1
    # a jump's offset counts from the instruction after it
    return b"".join(struct.pack("<BBhi", op, dst | src << 4,
                                labels[off] - n - 1 if isinstance(off, str) else off, imm)
                    for n, (op, dst, src, off, imm) in enumerate(insns))


class CgroupIpFilter:
    """A cgroup of our own with localhost_only_program() attached both
    ways: what IPAddressDeny=any and IPAddressAllow=localhost attach to the
    unit's cgroup.  Removed on exit (once the processes in it are gone)."""

    def __init__(self):
        self.path = os.path.join(cgroup2_root(), f"xdpd-test-{os.getpid()}")
        self.libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        self.libbpf.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                              ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
        self.libbpf.bpf_prog_attach.argtypes = [ctypes.c_int] * 3 + [ctypes.c_uint]

    def __enter__(self) -> "CgroupIpFilter":
        os.mkdir(self.path)
        try:
            cg = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for egress, attach in ((False, BPF_CGROUP_INET_INGRESS),
                                       (True, BPF_CGROUP_INET_EGRESS)):
                    code = localhost_only_program(egress)
                    fd = self.libbpf.bpf_prog_load(BPF_PROG_TYPE_CGROUP_SKB, b"localhost_only",
                                                   b"GPL", code, len(code) // 8, None)
                    if fd < 0:
                        raise OSError(-fd, f"load cgroup_skb program: {os.strerror(-fd)}")
                    try:
                        err = self.libbpf.bpf_prog_attach(fd, cg, attach, 0)
                        if err:
                            raise OSError(-err, f"attach to {self.path}: {os.strerror(-err)}")
                    finally:
                        os.close(fd)        # the attachment keeps the program
            finally:
                os.close(cg)
        except BaseException:
            self.__exit__()
            raise
        return self

    def join(self) -> str:
        """Shell text that moves the shell into the cgroup (then exec)."""
        return f"echo $$ > {self.path}/cgroup.procs"

    def __exit__(self, *exc) -> None:
        def removed():
            try:
                os.rmdir(self.path)         # the attached programs go with it
            except FileNotFoundError:
                return True
            except OSError:                 # EBUSY: a process still in it is exiting
                return False
            return True
        poll_until(removed, 10, f"{self.path} removed")


def sandbox_wrap(ip_filter: CgroupIpFilter) -> list[str]:
    """Prefix for a command: its own mount namespace, shared from the host
    one way (PrivateMounts=); a /proc of its own mounted with the unit's
    ProtectProc= as hidepid=; the IP filter's cgroup from before its first
    socket (IPAddressDeny=)."""
    hidepid = unit_service()["ProtectProc"][-1]
    script = (f"mount -t proc -o hidepid={hidepid} proc /proc && {ip_filter.join()} "
              '&& exec "$@"')
    return ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script, "sh"]


PROBE = r"""
import json, socket
result = {}
for address in ("127.0.0.1", "198.51.100.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (address, 9))
        result[address] = "sent"
    except OSError as e:
        result[address] = e.errno
print(json.dumps(result))
"""


def test_forwards_in_its_own_mount_namespace_proc_view_and_ip_filter(lab):
    """xdpd as the unit runs it: PrivateMounts=, ProtectProc=, IPAddressDeny=
    and IPAddressAllow= on top of the capability set."""
    svc = unit_service()
    assert svc["PrivateMounts"] == ["yes"] and svc["IPAddressDeny"] == ["any"]
    assert svc["IPAddressAllow"] == ["localhost"]
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    prefix, extra = memlock_like_the_unit()
    caps = unit_words("CapabilityBoundingSet")
    # a local address that is not loopback: what the filter must refuse
    lab.run(lab.dut_ns, "ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
    try:
        with CgroupIpFilter() as ip_filter:
            # the filter is really on: in its cgroup only loopback gets out
            probe = lab.run(lab.dut_ns, "sh", "-c", f'{ip_filter.join()} && exec "$@"', "sh",
                            sys.executable, "-c", PROBE)
            assert json.loads(probe.stdout) == {"127.0.0.1": "sent", "198.51.100.1": errno.EPERM}

            with LabDaemon(lab, forward_config(lab),
                           wrap=prefix + sandbox_wrap(ip_filter) + setpriv(caps + extra)) as d:
                d.start()                     # ready: its metrics answer over loopback
                pid = d.proc.pid
                with open(f"/proc/{pid}/mountinfo") as f:
                    proc_mount = [line for line in f if line.split()[4] == "/proc"][-1]
                assert f"hidepid={svc['ProtectProc'][-1]}" in proc_mount, proc_mount
                assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
                with open(f"/proc/{pid}/cgroup") as f:
                    assert f"0::/{os.path.basename(ip_filter.path)}\n" in f.read()

                workers = {w["name"]: w["pid"] for w in d.status()["workers"]}
                assert len(workers) == 4, workers
                assert forward_and_count(lab, tag=64) == N
                assert d.status()["ready"]
                # the supervisor still sees its workers in its /proc
                m = d.scrape()
                cpu = m.by("xdpd_worker_cpu_seconds_total", "netdev", "queue")
                assert len(cpu) == 4 and all(v > 0 for v in cpu.values()), cpu
                for name, wpid in workers.items():
                    assert f"{name}: pid {wpid} rss " in d.log(), d.log()
                assert d.stop() == exitcodes.OK, d.log()
                assert "Traceback" not in d.log()
    finally:
        lab.run(lab.dut_ns, "ip", "addr", "del", "198.51.100.1/32", "dev", "lo", check=False)
    assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)
