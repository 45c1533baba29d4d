"""Dropping privileges: the first thing a worker (and a standby) does.

A worker is spawned as root with the supervisor's capabilities because it
inherits them through execve(), not because it needs them: creating and
binding the AF_XDP socket, the UMEM and the eventfds is the supervisor's
work, and what a worker does with them afterwards (sendto, recvfrom and
poll on the socket, eventfd writes, loads and stores in shared memory)
needs no capability and no particular user, and neither does mapping them
(the descriptors are all it takes).  So before it maps anything a peer can
write, a worker calls drop_all_capabilities(uid, gid); a standby does so
before it waits: a worker that a bad packet, a bug or a hostile peer takes
over is an unprivileged user's process that cannot write root's files,
signal root's processes, or be traced by its own uid.

The order matters:
1. the bounding set, one PR_CAPBSET_DROP per capability up to
   /proc/sys/kernel/cap_last_cap: this needs CAP_SETPCAP in the effective
   set, so it comes first (and the unit's CapabilityBoundingSet= keeps
   CAP_SETPCAP for it);
2. the ambient set (PR_CAP_AMBIENT_CLEAR_ALL);
3. supplementary groups, gid, uid (needs CAP_SETGID and CAP_SETUID, still
   effective; the uid last): leaving uid 0 clears the permitted and
   effective sets, and makes the process non-dumpable until step 6;
4. effective, permitted and inheritable through capset(2), which may always
   lower them;
5. PR_SET_NO_NEW_PRIVS: no later execve() can grant anything;
6. PR_SET_DUMPABLE 0: no core dump of shared memory, its /proc files
   root's, no ptrace by its own uid (only CAP_SYS_PTRACE).
Then /proc/self/status is read back: the kernel's own account, not ours.
A uid change also clears the parent-death signal: the caller sets it again.

Capabilities, ids and no_new_privs belong to a thread, not a process, so
this refuses to run in a process with more than one thread.

Kernel-facing and policy-free: each failure raises PrivilegeError with the
errno and the step that failed; deciding that it is fatal is the caller's
business.
"""
from __future__ import annotations

import ctypes
import os

from xdpd.kernel.errors import CallError

# <linux/prctl.h>
PR_CAPBSET_DROP = 24
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/capability.h>
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LINUX_CAPABILITY_U32S_3 = 2           # capabilities 0-31 and 32-63

CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"
STATUS_FILE = "/proc/self/status"
# /proc/<pid>/status lines that must read zero afterwards
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


# typedef struct __user_cap_header_struct {
#         __u32 version;
#         int pid;
# } *cap_user_header_t;
class CapUserHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32),
                ("pid", ctypes.c_int)]


# typedef struct __user_cap_data_struct {
#         __u32 effective;
#         __u32 permitted;
#         __u32 inheritable;
# } *cap_user_data_t;
# (version 3 takes an array of _LINUX_CAPABILITY_U32S_3 of them)
class CapUserData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32),
                ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int
_libc.capset.argtypes = [ctypes.POINTER(CapUserHeader), ctypes.POINTER(CapUserData)]
_libc.capset.restype = ctypes.c_int


class PrivilegeError(CallError):
    """A step of dropping capabilities failed; errno is kept where the
    kernel gave one (None when the read-back found something left)."""


def _prctl(option: int, arg2: int, what: str, hint: str = "") -> None:
    if _libc.prctl(option, arg2, 0, 0, 0) != 0:
        raise PrivilegeError(ctypes.get_errno(), what, hint)


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open(CAP_LAST_CAP_FILE) as f:
            return int(f.read())
    except OSError as e:
        raise PrivilegeError(e.errno, f"read {CAP_LAST_CAP_FILE}") from None
    except ValueError:
        raise PrivilegeError(None, f"{CAP_LAST_CAP_FILE} holds no number") from None


def read_status(path: str = STATUS_FILE) -> dict[str, str]:
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    except OSError as e:
        raise PrivilegeError(e.errno, f"read {path}") from None
    return fields


def check_dropped(fields: dict[str, str], source: str = STATUS_FILE) -> None:
    """Raise PrivilegeError unless every capability set reads zero and
    no_new_privs is set, naming each field that does not."""
    left = []
    for key in CAP_FIELDS:
        value = fields.get(key)
        if value is None:
            left.append(f"{key} missing")
        elif int(value, 16) != 0:
            left.append(f"{key}={value}")
    if fields.get("NoNewPrivs") != "1":
        left.append(f"NoNewPrivs={fields.get('NoNewPrivs', 'missing')}")
    if left:
        raise PrivilegeError(None, f"capabilities still held after dropping them "
                                   f"({source}: {', '.join(left)}; expected "
                                   f"{'/'.join(CAP_FIELDS)} 0 and NoNewPrivs 1)")


def drop_all_capabilities(uid: int | None = None, gid: int | None = None) -> None:
    """Empty every capability set of this (single-threaded) process, set
    no_new_privs, and check the result in /proc/self/status.  With uid and
    gid, also become that user (groups: gid alone) and non-dumpable first."""
    threads = read_status().get("Threads")
    if threads != "1":
        raise PrivilegeError(None, f"drop capabilities in a process with {threads} threads: "
                                   "capabilities belong to the calling thread only; "
                                   "drop them before starting any thread")
    for cap in range(last_cap() + 1):
        _prctl(PR_CAPBSET_DROP, cap, f"PR_CAPBSET_DROP of capability {cap}",
               "emptying the bounding set needs CAP_SETPCAP "
               "(keep it in the unit's CapabilityBoundingSet=)")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL")
    if uid is not None:
        become(uid, gid if gid is not None else uid)
    header = CapUserHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapUserData * _LINUX_CAPABILITY_U32S_3)()      # all zero
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise PrivilegeError(ctypes.get_errno(), "capset(2) to empty effective, "
                                                 "permitted and inheritable")
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    _prctl(PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE 0")
    fields = read_status()
    check_dropped(fields)
    if uid is not None:
        check_user(fields, uid, gid if gid is not None else uid)
    if _libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise PrivilegeError(None, "still dumpable after PR_SET_DUMPABLE 0")


def become(uid: int, gid: int) -> None:
    """Supplementary groups, then gid, then uid (setting the uid last: it
    takes the capability to change the others with it).  A uid change from
    0 to non-zero also clears the permitted and effective capability sets."""
    if uid == 0:
        raise PrivilegeError(None, "refusing to run a worker as uid 0: name an "
                                   "unprivileged user in workers.user")
    for what, call in ((f"setgroups([{gid}])", lambda: os.setgroups([gid])),
                       (f"setresgid({gid})", lambda: os.setresgid(gid, gid, gid)),
                       (f"setresuid({uid})", lambda: os.setresuid(uid, uid, uid))):
        try:
            call()
        except OSError as e:
            raise PrivilegeError(e.errno, what,
                                 "changing user and group needs CAP_SETUID and CAP_SETGID "
                                 "(keep them in the unit's CapabilityBoundingSet=)") from None


def check_user(fields: dict[str, str], uid: int, gid: int, source: str = STATUS_FILE) -> None:
    """Raise PrivilegeError unless every uid and gid (real, effective,
    saved, file system) is the one asked for and gid is the only group."""
    wrong = []
    for key, want in (("Uid", uid), ("Gid", gid)):
        got = fields.get(key, "").split()
        if got != [str(want)] * 4:
            wrong.append(f"{key}={' '.join(got) or 'missing'}")
    if fields.get("Groups", "").split() != [str(gid)]:
        wrong.append(f"Groups={fields.get('Groups', 'missing')}")
    if wrong:
        raise PrivilegeError(None, f"not uid {uid} / gid {gid} after the change "
                                   f"({source}: {', '.join(wrong)})")
