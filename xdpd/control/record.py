"""The record of what a running supervisor attached, kept so that the next
start can remove what a killed one left.

A supervisor that is killed (SIGKILL, the OOM killer, a crash) cannot
detach: its XDP programs stay attached, held by the netdevs, and the next
`xdpd run` would find them in its way.  So the supervisor keeps, next to
its control socket (a directory only root may write), a small JSON file
naming itself (pid, and the process's start time and the boot, so that a
reused pid is not taken for it) and, per netdev, the program it attached:

    {"format": 1, "pid": 4567, "start_time": 891234, "boot_id": "...",
     "netdevs": [{"name": "in0", "ifindex": 5, "prog_id": 123,
                  "xdp_mode": "native"}]}

It is replaced whole (written to a temporary file, then renamed over the
record), so a reader sees the old record or the new one, never half of one.

This module only reads, writes and removes the record and says whether
its owner still runs; what to detach, and when, is the supervisor's
business.  The journals of steering.py and wake.py are written and
recovered with the same calls (write_json, recover_journal).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from xdpd.control.server import make_private_dir

FORMAT = 1
SUFFIX = ".attached.json"           # /run/xdpd/xdpd.sock -> /run/xdpd/xdpd.attached.json

log = logging.getLogger("xdpd.runstate")


class RecordError(ValueError):
    """The record exists but is not one this module wrote."""


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one that got the same pid."""
    pid: int
    start_time: int         # /proc/PID/stat field 22: clock ticks after boot
    boot_id: str            # /proc/sys/kernel/random/boot_id

    @classmethod
    def me(cls) -> "Owner":
        pid = os.getpid()
        return cls(pid, process_start_time(pid), boot_id())


@dataclass(frozen=True)
class Attachment:
    """One netdev's program.  xdp_mode is None between the record and the
    attach: the supervisor records a program before it attaches it."""
    netdev: str
    ifindex: int
    prog_id: int
    xdp_mode: str | None = None
    # bpf_prog_info.tag in hex: told apart from another program that got the
    # same id later (ids are not reused at once, but they do wrap)
    prog_tag: str | None = None


@dataclass(frozen=True)
class Record:
    owner: Owner
    attachments: tuple[Attachment, ...] = ()


def record_path(control_socket: str) -> str:
    """Where the supervisor with this control socket keeps its record: the
    same directory, the socket's name with SUFFIX (two daemons with two
    sockets in one directory keep two records)."""
    return beside_socket(control_socket, SUFFIX)


def beside_socket(control_socket: str, suffix: str) -> str:
    """A file of this daemon's next to its control socket: the socket's
    name with `suffix` (the record, and the journals of steering.py and
    wake.py)."""
    directory, name = os.path.split(control_socket)
    return os.path.join(directory, os.path.splitext(name)[0] + suffix)


def make_dir(path: str) -> bool:
    """Create the record's directory like the control socket's (0700; one
    others may write is refused).  True if it was created."""
    return make_private_dir(os.path.dirname(path) or ".")


def process_start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks after boot; None if it does not run."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: count from the last ')'
    return int(stat[stat.rindex(")") + 2:].split()[19])


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def owner_alive(owner: Owner, start_time_of=process_start_time, current_boot=boot_id) -> bool:
    """True if the record's owner still runs: same boot, and its pid is a
    process that started when the owner did."""
    if owner.boot_id != current_boot():
        return False
    return start_time_of(owner.pid) == owner.start_time


def read_document(path: str, format_: str) -> dict | None:
    """The JSON object at path if its "format" is format_; None if there is
    no file.  ValueError if it is something else (JSON, encoding or format);
    OSError if it cannot be read.  For the record and the steering journal."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    doc = json.loads(data)          # json.JSONDecodeError, UnicodeDecodeError: ValueError
    if not isinstance(doc, dict) or doc.get("format") != format_:
        raise ValueError(f"expected format {format_}")
    return doc


def read(path: str) -> Record | None:
    """The record at path; None if there is none.  RecordError if the file
    is not a record; OSError if it cannot be read."""
    try:
        doc = read_document(path, FORMAT)
        if doc is None:
            return None
        owner = owner_of(doc)
        netdevs = doc.get("netdevs")
        if not isinstance(netdevs, list):
            raise ValueError("'netdevs' is not a list")
        attachments = []
        for n in netdevs:
            if not isinstance(n, dict):
                raise ValueError("a netdev entry is not an object")
            mode, tag = n.get("xdp_mode"), n.get("prog_tag")
            if mode is not None and not isinstance(mode, str):
                raise ValueError("'xdp_mode' is not a string")
            if tag is not None and not (isinstance(tag, str) and re.fullmatch("[0-9a-f]{16}", tag)):
                raise ValueError("'prog_tag' is not 16 hex digits")
            attachments.append(Attachment(_str(n, "name"), _int(n, "ifindex"),
                                          _int(n, "prog_id"), mode, tag))
    except ValueError as e:              # json.JSONDecodeError and UnicodeDecodeError too
        raise RecordError(f"{path}: not an xdpd record ({e})") from None
    return Record(owner, tuple(attachments))


def owner_of(doc: dict) -> Owner:
    """The document's owner, checked field by field (ValueError)."""
    return Owner(_int(doc, "pid"), _int(doc, "start_time"), _str(doc, "boot_id"))


def quarantine(path: str, problem: Exception, then: str) -> None:
    """Move a file that is not what it claims aside (PATH.invalid, replacing
    an older one) for an operator to look at, and log the problem with what
    was (not) done and what to check (`then`).  OSError, its message naming
    the problem too, if the file cannot be moved."""
    bad = path + ".invalid"
    try:
        os.replace(path, bad)
    except OSError as err:
        raise OSError(err.errno, f"{problem}; moving it aside failed: "
                      f"{err.strerror or err}; remove it by hand") from None
    log.warning("%s; moved to %s, %s", problem, bad, then)


def _int(doc: dict, key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key!r} is not a number")
    return value


def _str(doc: dict, key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} is not a string")
    return value


def write(path: str, record: Record) -> None:
    """Replace the record at path with `record`, atomically (0600)."""
    doc = {"format": FORMAT, "pid": record.owner.pid, "start_time": record.owner.start_time,
           "boot_id": record.owner.boot_id,
           "netdevs": [{"name": a.netdev, "ifindex": a.ifindex, "prog_id": a.prog_id,
                        "xdp_mode": a.xdp_mode, "prog_tag": a.prog_tag}
                       for a in record.attachments]}
    write_json(path, doc)


def write_json(path: str, doc: dict) -> None:
    """Replace the JSON file at path with `doc`, atomically (0600): a
    reader sees the old file or the new one.  Also for steering's journal."""
    data = (json.dumps(doc, indent=1) + "\n").encode()
    tmp = path + ".tmp"                 # one writer per file: its owner
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def remove(path: str) -> bool:
    """Remove the record (and a temporary file a killed writer left).
    True if there was a record."""
    try:
        os.unlink(path + ".tmp")
    except FileNotFoundError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def remove_dir(path: str) -> bool:
    """Remove the record's directory (one make_dir created) if it is empty.
    True if it was removed."""
    try:
        os.rmdir(os.path.dirname(path) or ".")
    except OSError:
        return False                    # not empty: another daemon's socket or record
    return True


def recover_journal(path: str, read, undo, *, kind: str, nothing: str, by_hand: str,
                    refused: type[Exception], owner_alive=owner_alive,
                    current_boot=boot_id) -> None:
    """At start: a dead xdpd's journal at `path` undone, then removed.

    read(path) gives (owner, entries), None without a journal, or raises a
    ValueError for a file that is not one (moved aside with `nothing` and
    `by_hand` said, nothing undone on its word).  undo(owner, entries)
    undoes what it names, unless its owner's boot was an earlier one.  A
    journal whose owner still runs is another xdpd's: `refused` is raised,
    naming the `kind` of journal, and the journal is kept."""
    try:
        found = read(path)
    except ValueError as e:
        try:
            quarantine(path, e, f"{nothing}: {by_hand}")
        except OSError as err:
            raise refused(str(err)) from None
        return
    if found is None:
        return
    owner, entries = found
    if owner_alive(owner):
        raise refused(f"another xdpd (pid {owner.pid}) keeps its {kind} journal in {path}; "
                      "stop it first, or give this one another control.socket")
    if owner.boot_id != current_boot():
        log.info("%s: left by xdpd pid %d before the last boot; %s", path, owner.pid, nothing)
    else:
        undo(owner, entries)
    remove(path)
