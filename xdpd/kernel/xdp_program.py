"""Our XDP program (bpf/rr_redirect.c) as the supervisor sees it: one loaded
copy with its own maps per netdev, and the structs it shares with C.

Owns: XdpProgram (load, attach, detach, the maps: xsks, queue
configuration, pass rules, per-queue statistics), the ctypes mirrors of
bpf/rr_redirect.h (checked against the header by tests/unit/test_limits.py
and tests/bpf), match_to_c(), and where the built object lies.
Must not: decide anything: which queues are owned, which fallback applies,
when to attach or detach is the supervisor's.

One XdpProgram is meant for one netdev: rx queue ids collide across
netdevs, so each netdev needs its own xsks map.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys

from xdpd.kernel.libbpf import (BPF_ANY, XDP_DROP, XDP_FLAGS_UPDATE_IF_NOEXIST, XDP_PASS,
                                _IP_LINK_XDP_WORD, _MODE_FLAGS, BpfError, BpfProgInfo,
                                _detach_if_attached, bpf_error, errno_hint, errno_name,
                                library, prog_name, query_xdp)

log = logging.getLogger("xdpd.bpf")

# bpf/rr_redirect.h
XDPD_MAX_QUEUES = 256
XDPD_MAX_FANOUT = 16
XDPD_SPREAD_FLOW_HASH = 0
XDPD_SPREAD_ROUND_ROBIN = 1
XDPD_MAX_PASS_RULES = 16
XDPD_MATCH_ETHERTYPE = 1 << 0
XDPD_MATCH_VLAN = 1 << 1
XDPD_MATCH_UNTAGGED = 1 << 2
XDPD_MATCH_IP_PROTO = 1 << 3
XDPD_MATCH_SRC = 1 << 4
XDPD_MATCH_DST = 1 << 5
XDPD_MATCH_SRC_PORT = 1 << 6
XDPD_MATCH_DST_PORT = 1 << 7

_ETH_P_IP, _ETH_P_IPV6 = 0x0800, 0x86DD

PROG_NAME = "rr_redirect"
OBJECT_NAME = "rr_redirect.bpf.o"
_FALLBACKS = {"pass": XDP_PASS, "drop": XDP_DROP}

# spread names as the config spells them -> xdpd_queue_conf.spread
SPREADS = {"flow_hash": XDPD_SPREAD_FLOW_HASH, "round_robin": XDPD_SPREAD_ROUND_ROBIN}

# --- C structures -----------------------------------------------------------

class XdpdQueueConf(ctypes.Structure):
    # struct xdpd_queue_conf {
    #         __u32 owned;
    #         __u32 fallback;
    #         __u32 fanout;
    #         __u32 spread;
    # };
    _fields_ = [
        ("owned", ctypes.c_uint32),
        ("fallback", ctypes.c_uint32),
        ("fanout", ctypes.c_uint32),
        ("spread", ctypes.c_uint32),
    ]


class XdpdQueueStats(ctypes.Structure):
    # struct xdpd_queue_stats {
    #         __u64 redirected;
    #         __u64 passed;
    #         __u64 no_socket;
    #         __u64 pass_rule;
    #         __u64 fanout_to_owner;
    # };
    _fields_ = [
        ("redirected", ctypes.c_uint64),
        ("passed", ctypes.c_uint64),
        ("no_socket", ctypes.c_uint64),
        ("pass_rule", ctypes.c_uint64),
        ("fanout_to_owner", ctypes.c_uint64),
    ]


class XdpdMatch(ctypes.Structure):
    # struct xdpd_match {
    #         __u32 fields;
    #         __be16 ethertype;
    #         __u16 vlan;
    #         __u8 ip_proto;
    #         __u8 pad;
    #         __be16 src_port;
    #         __be16 dst_port;
    #         __u16 pad2;
    #         __be32 src[4];
    #         __be32 src_mask[4];
    #         __be32 dst[4];
    #         __be32 dst_mask[4];
    # };
    _fields_ = [
        ("fields", ctypes.c_uint32),
        ("ethertype", ctypes.c_uint16),
        ("vlan", ctypes.c_uint16),
        ("ip_proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("src_port", ctypes.c_uint16),
        ("dst_port", ctypes.c_uint16),
        ("pad2", ctypes.c_uint16),
        ("src", ctypes.c_uint32 * 4),
        ("src_mask", ctypes.c_uint32 * 4),
        ("dst", ctypes.c_uint32 * 4),
        ("dst_mask", ctypes.c_uint32 * 4),
    ]


class XdpdProgConf(ctypes.Structure):
    # struct xdpd_prog_conf {
    #         __u32 pass_rules_first;
    #         __u32 nr_pass_rules;
    # };
    _fields_ = [
        ("pass_rules_first", ctypes.c_uint32),
        ("nr_pass_rules", ctypes.c_uint32),
    ]


def _be16(n: int) -> int:
    """n as the u16 whose memory holds n in network byte order."""
    return int.from_bytes(n.to_bytes(2, "big"), sys.byteorder)


def _words(packed: bytes) -> list[int]:
    """16 bytes (an address, zero-padded) as four u32 in memory order."""
    packed = packed.ljust(16, b"\0")
    return list((ctypes.c_uint32 * 4).from_buffer_copy(packed))


def match_to_c(match) -> XdpdMatch:
    """A config Match (any object with its attributes) as the program's
    struct xdpd_match.  A prefix also sets the ethertype of its family."""
    r = XdpdMatch()
    if match.ethertype is not None:
        r.fields |= XDPD_MATCH_ETHERTYPE
        r.ethertype = _be16(match.ethertype)
    if match.vlan == "none":
        r.fields |= XDPD_MATCH_UNTAGGED
    elif match.vlan is not None:
        r.fields |= XDPD_MATCH_VLAN
        r.vlan = match.vlan
    if match.ip_proto is not None:
        r.fields |= XDPD_MATCH_IP_PROTO
        r.ip_proto = match.ip_proto
    for key, bit in (("src_port", XDPD_MATCH_SRC_PORT), ("dst_port", XDPD_MATCH_DST_PORT)):
        port = getattr(match, key)
        if port is not None:
            r.fields |= bit
            setattr(r, key, _be16(port))
    for key, bit in (("src", XDPD_MATCH_SRC), ("dst", XDPD_MATCH_DST)):
        net = getattr(match, key)
        if net is None:
            continue
        r.fields |= bit | XDPD_MATCH_ETHERTYPE
        r.ethertype = _be16(_ETH_P_IP if net.version == 4 else _ETH_P_IPV6)
        getattr(r, key)[:] = _words(net.network_address.packed)
        getattr(r, key + "_mask")[:] = _words(net.netmask.packed)
    return r


def object_path() -> str:
    """The packaged XDP object, built next to this module by setup.py."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), OBJECT_NAME)
    if not os.path.exists(path):
        raise BpfError(errno.ENOENT, f"XDP object {path} not built; "
                       "run 'pip install .' or 'make build'")
    return path


class XdpProgram:
    """One loaded rr_redirect with its own maps, for one netdev."""

    def __init__(self, obj: int, path: str, name: str):
        self._obj = obj                 # struct bpf_object *
        self._path = path
        self.name = name
        self.prog_fd = -1
        self.prog_id = 0
        self.ifindex = 0                # set while attached
        self.ifname = ""
        self.mode = None                # "native" | "generic" while attached
        self._xsks_fd = self._conf_fd = self._stats_fd = -1
        self._rules_fd = self._prog_conf_fd = -1
        self._pass_rules_first = 0      # the active set (prog_conf starts zeroed)

    @classmethod
    def load(cls, path: str | None = None, name: str = "") -> "XdpProgram":
        """Open and load the object (verifier included).  name (usually the
        netdev) only appears in messages."""
        lib = library()
        path = path or object_path()
        what = f"load {PROG_NAME} from {path}" + (f" for {name}" if name else "")
        ctypes.set_errno(0)
        obj = lib.bpf_object__open_file(os.fsencode(path), None)
        if not obj:
            err = ctypes.get_errno() or errno.EINVAL
            if err == errno.ENOENT:
                hint = "no such file"
            elif err in (errno.EACCES, errno.EPERM):
                hint = "cannot read it"
            else:
                hint = "not an XDP object built from bpf/rr_redirect.c"
            raise bpf_error(err, what, hint)
        self = cls(obj, path, name)
        try:
            ret = lib.bpf_object__load(obj)
            if ret < 0:
                raise bpf_error(-ret, what, errno_hint(-ret) or
                             "the verifier log is in the xdpd.bpf debug log")
            prog = lib.bpf_object__find_program_by_name(obj, PROG_NAME.encode())
            if not prog:
                raise bpf_error(errno.ENOENT, f"{what}: no program {PROG_NAME}")
            self.prog_fd = lib.bpf_program__fd(prog)
            for attr, map_name in (("_xsks_fd", "xsks"), ("_conf_fd", "queue_conf"),
                                   ("_stats_fd", "queue_stats"), ("_rules_fd", "pass_rules"),
                                   ("_prog_conf_fd", "prog_conf")):
                fd = lib.bpf_object__find_map_fd_by_name(obj, map_name.encode())
                if fd < 0:
                    raise bpf_error(-fd, f"{what}: find map {map_name}")
                setattr(self, attr, fd)
            info = BpfProgInfo()
            info_len = ctypes.c_uint32(ctypes.sizeof(info))
            ret = lib.bpf_obj_get_info_by_fd(self.prog_fd, ctypes.byref(info),
                                             ctypes.byref(info_len))
            if ret < 0:
                raise bpf_error(-ret, f"{what}: get program info")
            self.prog_id = info.id
            self.prog_tag = bytes(info.tag).hex()
        except BaseException:
            self.close()
            raise
        log.debug("loaded %s from %s as prog id %d%s", PROG_NAME, path,
                  self.prog_id, f" for {name}" if name else "")
        return self

    # --- attach / detach ---------------------------------------------------

    def attach(self, ifindex: int, ifname: str, mode: str) -> str:
        """Attach to ifindex, never replacing a program someone else
        attached.  mode: "native", "generic" or "auto" (native, then generic
        if the driver says no).  Returns the mode actually used."""
        if mode == "auto":
            tries = ["native", "generic"]
        elif mode in _MODE_FLAGS:
            tries = [mode]
        else:
            raise ValueError(f"xdp mode {mode!r}: expected native, generic or auto")
        self._check_open()
        if self.mode is not None:
            if self.ifindex == ifindex:
                return self.mode
            raise ValueError(f"{PROG_NAME} (prog id {self.prog_id}) is already "
                             f"attached to {self.ifname}; load one per netdev")
        lib = library()
        for i, try_mode in enumerate(tries):
            flags = XDP_FLAGS_UPDATE_IF_NOEXIST | _MODE_FLAGS[try_mode]
            ret = lib.bpf_xdp_attach(ifindex, self.prog_fd, flags, None)
            if ret == 0:
                self.ifindex, self.ifname, self.mode = ifindex, ifname, try_mode
                log.debug("%s: attached %s (prog id %d) in %s mode", ifname,
                          PROG_NAME, self.prog_id, try_mode)
                return try_mode
            err = -ret
            what = f"attach {PROG_NAME} to {ifname} ({try_mode})"
            if err in (errno.EBUSY, errno.EEXIST):
                # EBUSY: a program in this mode (UPDATE_IF_NOEXIST);
                # EEXIST: one in the other mode (native and generic exclude
                # each other).  Either way: someone else's program.
                raise self._busy_error(what, ifindex, ifname)
            if i + 1 < len(tries) and err in (errno.EOPNOTSUPP, errno.EINVAL, errno.ERANGE):
                # EOPNOTSUPP: the driver has no native XDP (expected with
                # auto); EINVAL, ERANGE: it has, but refused (MTU, offloads):
                # say so.
                log.log(logging.INFO if err == errno.EOPNOTSUPP else logging.WARNING,
                        "%s: %s failed: %s; falling back to generic",
                        ifname, what, errno_name(err))
                continue
            if err == errno.EOPNOTSUPP and try_mode == "native":
                raise bpf_error(err, what, "try xdp_mode: generic")
            if err == errno.ERANGE:
                raise bpf_error(err, what, f"the MTU of {ifname} (or of its veth peer) is "
                                "more than its driver takes for XDP in one buffer and it "
                                "cannot do multi-buffer: lower it ('ip link set dev "
                                f"{ifname} mtu 1500'), or try xdp_mode: generic")
            if err == errno.ENODEV:
                raise bpf_error(err, what, f"is {ifname} still there "
                             f"(ifindex {ifindex})?")
            raise bpf_error(err, what, errno_hint(err))
        raise AssertionError("unreachable")

    @staticmethod
    def _busy_error(what: str, ifindex: int, ifname: str) -> BpfError:
        try:
            cur = query_xdp(ifindex)
        except BpfError:
            cur = {"prog_id": 0, "mode": None}
        ident = ""
        if cur["prog_id"]:
            try:
                name = prog_name(cur["prog_id"])
            except BpfError:
                name = ""
            ident = f" (id {cur['prog_id']}" + (f", name {name}" if name else "") + \
                f", {cur['mode']})"
        word = _IP_LINK_XDP_WORD.get(cur["mode"], "xdp")
        return bpf_error(errno.EBUSY, what,
                      f"another XDP program{ident} is attached; if it is stale, remove "
                      f"it with 'ip link set dev {ifname} {word} off'")

    def detach(self) -> None:
        """Detach, but only if our program is still the one attached (an
        atomic compare-and-replace in the kernel).  Idempotent."""
        if self.mode is None:
            return
        ifindex, ifname, mode = self.ifindex, self.ifname, self.mode
        err = _detach_if_attached(ifindex, mode, self.prog_fd)
        if err == errno.EEXIST:
            # The attached program is not ours (anymore): leave it alone.
            try:
                cur = query_xdp(ifindex)
            except BpfError:
                cur = {"prog_id": 0, "mode": None}
            if cur["prog_id"]:
                log.warning("%s: not detaching XDP program id %d (%s): it "
                            "replaced %s (prog id %d), which xdpd attached",
                            ifname, cur["prog_id"], cur["mode"], PROG_NAME,
                            self.prog_id)
            else:
                log.debug("%s: %s (prog id %d) was already detached",
                          ifname, PROG_NAME, self.prog_id)
        elif err == errno.ENODEV:
            log.debug("%s: gone (ifindex %d); nothing to detach", ifname, ifindex)
        elif err:
            raise bpf_error(err, f"detach {PROG_NAME} (prog id {self.prog_id}) "
                         f"from {ifname} ({mode})", errno_hint(err))
        else:
            log.debug("%s: detached %s (prog id %d)", ifname, PROG_NAME,
                      self.prog_id)
        self.ifindex, self.ifname, self.mode = 0, "", None

    # --- maps --------------------------------------------------------------

    def _where(self) -> str:
        where = self.ifname or self.name
        return f" of {where}" if where else ""

    def set_queue(self, queue: int, owned: bool, fallback: str = "pass",
                  fanout: int = 1, spread: str = "flow_hash") -> None:
        """queue_conf[queue]: owned -> redirect to the queue's socket, or
        with fanout > 1 to one of its `fanout` sockets, picked by `spread`
        ("flow_hash" or "round_robin"); when the picked member's socket is
        missing the owner's (member 0) takes the packet, and when that is
        missing too apply fallback ("pass" or "drop")."""
        if fallback not in _FALLBACKS:
            raise ValueError(f"fallback {fallback!r}: expected pass or drop")
        if spread not in SPREADS:
            raise ValueError(f"spread {spread!r}: expected flow_hash or round_robin")
        if isinstance(fanout, bool) or not isinstance(fanout, int) or \
                not 1 <= fanout <= XDPD_MAX_FANOUT:
            raise ValueError(f"fanout {fanout!r}: expected 1..{XDPD_MAX_FANOUT}")
        self._check_open()
        key = ctypes.c_uint32(queue)
        val = XdpdQueueConf(owned=1 if owned else 0, fallback=_FALLBACKS[fallback],
                            fanout=fanout, spread=SPREADS[spread])
        ret = library().bpf_map_update_elem(self._conf_fd, ctypes.byref(key),
                                            ctypes.byref(val), BPF_ANY)
        if ret < 0:
            raise bpf_error(-ret, f"set queue_conf[{queue}]{self._where()}",
                         self._queue_hint(-ret))

    def set_pass_rules(self, matches) -> None:
        """Packets on owned queues matching any of `matches` (config Match
        objects, at most XDPD_MAX_PASS_RULES) are passed to the kernel.
        Writes the inactive set of pass_rules in full (unused slots zeroed:
        they never match), then switches prog_conf to it in one update, so
        a packet sees the old rules or the new ones, never a mix."""
        matches = list(matches)
        if len(matches) > XDPD_MAX_PASS_RULES:
            raise ValueError(f"{len(matches)} pass rules: {PROG_NAME} takes at most "
                             f"{XDPD_MAX_PASS_RULES}")
        self._check_open()
        lib = library()
        first = XDPD_MAX_PASS_RULES if self._pass_rules_first == 0 else 0
        for i in range(XDPD_MAX_PASS_RULES):
            key = ctypes.c_uint32(first + i)
            val = match_to_c(matches[i]) if i < len(matches) else XdpdMatch()
            ret = lib.bpf_map_update_elem(self._rules_fd, ctypes.byref(key),
                                          ctypes.byref(val), BPF_ANY)
            if ret < 0:
                raise bpf_error(-ret, f"set pass_rules[{first + i}]{self._where()}", errno_hint(-ret))
        key = ctypes.c_uint32(0)
        conf = XdpdProgConf(pass_rules_first=first, nr_pass_rules=len(matches))
        ret = lib.bpf_map_update_elem(self._prog_conf_fd, ctypes.byref(key),
                                      ctypes.byref(conf), BPF_ANY)
        if ret < 0:
            raise bpf_error(-ret, f"set prog_conf{self._where()}", errno_hint(-ret))
        self._pass_rules_first = first

    def _xsks_key(self, queue: int, member: int, what: str) -> tuple[int, str]:
        """The xsks key of a queue's fanout member, and how messages name
        it.  what: the action, for the error of a queue beyond the map (its
        key would be another queue's member slot, so the kernel cannot
        refuse it as it refuses such a queue elsewhere)."""
        if isinstance(member, bool) or not isinstance(member, int) or \
                not 0 <= member < XDPD_MAX_FANOUT:
            raise ValueError(f"fanout member {member!r} of queue {queue}: expected "
                             f"0..{XDPD_MAX_FANOUT - 1}")
        if not 0 <= queue < XDPD_MAX_QUEUES:
            raise bpf_error(errno.E2BIG, f"{what} xsks (queue {queue}){self._where()}",
                         self._queue_hint(errno.E2BIG))
        key = queue + member * XDPD_MAX_QUEUES
        if member:
            return key, f"xsks[{key}] (queue {queue}, fanout member {member})"
        return key, f"xsks[{key}] (queue {queue})"

    def set_socket(self, queue: int, xsk_fd: int, member: int = 0) -> None:
        """The AF_XDP socket bound to that rx queue into xsks, as the
        queue's fanout member `member` (0: the owner, the only one without
        fanout)."""
        self._check_open()
        key_val, name = self._xsks_key(queue, member, f"put socket fd {xsk_fd} into")
        key = ctypes.c_uint32(key_val)
        val = ctypes.c_uint32(xsk_fd)
        ret = library().bpf_map_update_elem(self._xsks_fd, ctypes.byref(key),
                                            ctypes.byref(val), BPF_ANY)
        if ret < 0:
            err = -ret
            hint = self._queue_hint(err)
            if err == errno.EOPNOTSUPP:
                hint = f"fd {xsk_fd} is not an AF_XDP socket"
            elif err == errno.EBADF:
                hint = f"fd {xsk_fd} is not open"
            raise bpf_error(err, f"put socket fd {xsk_fd} into {name}"
                         f"{self._where()}", hint)

    def clear_socket(self, queue: int, member: int = 0) -> None:
        """Remove a socket of the queue from xsks: the owner's (member 0) ->
        the queue's fallback applies from now on (to a member's packets
        too, unless its own socket is there); a member's -> its packets go
        to the owner."""
        self._check_open()
        key_val, name = self._xsks_key(queue, member, "clear")
        key = ctypes.c_uint32(key_val)
        ret = library().bpf_map_delete_elem(self._xsks_fd, ctypes.byref(key))
        if ret < 0 and -ret != errno.ENOENT:
            raise bpf_error(-ret, f"clear {name}{self._where()}",
                         self._queue_hint(-ret))

    def queue_stats(self, queue: int) -> dict[str, int]:
        """queue_stats[queue] summed over the possible CPUs."""
        self._check_open()
        lib = library()
        ncpus = lib.libbpf_num_possible_cpus()
        if ncpus < 0:
            raise bpf_error(-ncpus, "count possible CPUs")
        vals = (XdpdQueueStats * ncpus)()
        key = ctypes.c_uint32(queue)
        ret = lib.bpf_map_lookup_elem(self._stats_fd, ctypes.byref(key), vals)
        if ret < 0:
            raise bpf_error(-ret, f"read queue_stats[{queue}]{self._where()}",
                         self._queue_hint(-ret))
        names = [f[0] for f in XdpdQueueStats._fields_]
        return {n: sum(getattr(v, n) for v in vals) for n in names}

    @staticmethod
    def _queue_hint(err: int) -> str:
        if err in (errno.E2BIG, errno.ENOENT):
            return f"{PROG_NAME} handles rx queues 0..{XDPD_MAX_QUEUES - 1}"
        return errno_hint(err)

    # --- lifetime ----------------------------------------------------------

    def _check_open(self) -> None:
        if not self._obj:
            raise ValueError(f"{PROG_NAME} (prog id {self.prog_id}) is closed")

    def close(self) -> None:
        """Detach (if attached), then free the object and its fds.  The
        object is freed even if the detach raised.  Idempotent."""
        if not self._obj:
            return
        try:
            self.detach()
        finally:
            library().bpf_object__close(self._obj)
            self._obj = None
            self.prog_fd = self._xsks_fd = self._conf_fd = self._stats_fd = -1
            self._rules_fd = self._prog_conf_fd = -1

    def __enter__(self) -> "XdpProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" on {self.ifname} ({self.mode})" if self.mode else ""
        return f"<XdpProgram {PROG_NAME} id {self.prog_id}{where}>"
