"""Reading the configuration file as root: only if no one but root and the
user running xdpd can change it.

Owns: read_config_file() and the ownership, mode and ACL checks.
Must not: parse the text.
"""
from __future__ import annotations

import grp
import os
import pwd
import stat
import struct

from xdpd.config.loader import MAX_FILE_BYTES
from xdpd.config.model import EXAMPLE, ConfigError

# --- reading the file ---------------------------------------------------------

def read_config_file(path: str) -> str:
    """The file's text, if only root and the user running xdpd can change it."""
    try:
        # bytes first: a decoding error then has its offset in the file, not in a chunk
        with open(path, "rb") as f:
            # the file opened, not the name: a rename in between changes nothing
            st = os.fstat(f.fileno())
            _check_writers(path, st, f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError([f"{path}: not a regular file; give the path of the YAML "
                                   "file itself"])
            data = f.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise ConfigError([f"{path}: larger than {MAX_FILE_BYTES} bytes; a "
                                   "configuration is a few kilobytes: is this the right "
                                   "file?"])
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file; check the path, or start from {EXAMPLE}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} "
                           f"at offset {exc.start}); save it as UTF-8"]) from None


def _check_writers(path: str, st: os.stat_result, fd: int | None = None) -> None:
    """Refuse a file that others can write: it says which programs run as root
    on which netdevs and where the metrics listen, so whoever can change it
    controls xdpd.  Root may own it, and so may the user running xdpd (a
    check-config run unprivileged on one's own copy)."""
    problems = []
    mode = stat.S_IMODE(st.st_mode)
    me = os.geteuid()
    if st.st_uid not in (0, me):
        owners = "root" if me == 0 else f"root or {_user(me)}, who runs xdpd"
        problems.append(f"{path}: owned by {_user(st.st_uid)}, who can change it; the owner "
                        f"must be {owners}: run 'chown root: {path}'")
    if mode & stat.S_IWOTH:
        problems.append(f"{path}: every user can write it (mode {mode:04o}); "
                        f"run 'chmod o-w {path}'")
    if mode & stat.S_IWGRP and st.st_gid != 0:
        problems.append(f"{path}: {_group(st.st_gid)} can write it (mode {mode:04o}); "
                        f"run 'chmod g-w {path}' or 'chown root: {path}'")
    for who in _acl_writers(fd, me) if fd is not None else ():
        problems.append(f"{path}: an access control list lets {who} write it; run "
                        f"'setfacl -b {path}' (getfacl {path} shows it)")
    if problems:
        raise ConfigError(problems)


# struct posix_acl_xattr_header { u32 a_version; } then entries of
# struct posix_acl_xattr_entry { u16 e_tag; u16 e_perm; u32 e_id; } (little endian)
_ACL_USER, _ACL_GROUP, _ACL_MASK = 0x02, 0x08, 0x10
_ACL_WRITE = 0x02


def _acl_writers(fd: int, me: int) -> list[str]:
    """Users and groups other than root (and us) that a POSIX ACL lets
    write the file: named entries with the write bit, within the mask."""
    try:
        raw = os.getxattr(fd, "system.posix_acl_access")
    except OSError:                     # no ACL (ENODATA), or none supported
        return []
    entries = [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw) - 7, 8)]
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0x07)
    out = []
    for tag, perm, ident in entries:
        if not perm & mask & _ACL_WRITE:
            continue
        if tag == _ACL_USER and ident not in (0, me):
            out.append(_user(ident))
        elif tag == _ACL_GROUP and ident != 0:
            out.append(_group(ident))
    return out


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"group {grp.getgrgid(gid).gr_name!r} (gid {gid})"
    except KeyError:
        return f"group gid {gid}"


