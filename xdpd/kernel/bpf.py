"""Kernel-facing wrapper over libbpf for the rr_redirect XDP program.

Thin on purpose: every function does one libbpf call (or a short fixed
sequence of them), keeps the kernel's errno in a BpfError, and says in the
message what was tried on what and, where there is one, the way out.  No
policy lives here: which queues are owned, which fallback applies, when to
attach or detach is the supervisor's business.

libbpf is reached through ctypes (libbpf.so.1, the 1.x ABI: functions return
a negative errno, pointer-returning ones return NULL and set errno).  The C
structures libbpf and the kernel take are mirrored below with ctypes, each
with its C declaration beside it; the layouts of the structs shared with the
XDP program (bpf/rr_redirect.h) are checked against the header by the tests.

One XdpProgram is one loaded copy of rr_redirect with its own maps, meant for
one netdev: rx queue ids collide across netdevs, so each netdev needs its own
xsks map.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import platform
import sys
import threading

from xdpd.kernel.errors import errname

log = logging.getLogger("xdpd.bpf")

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 0, 1, 2, 3, 4

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

# linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

XDP_ATTACHED_NONE = 0
XDP_ATTACHED_DRV = 1
XDP_ATTACHED_SKB = 2
XDP_ATTACHED_HW = 3
XDP_ATTACHED_MULTI = 4

# xdp_mode names as the config spells them -> attach flag
_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

# what 'ip link set dev X <word> off' removes a program attached in each mode
_IP_LINK_XDP_WORD = {"native": "xdp", "generic": "xdpgeneric", "offload": "xdpoffload"}

_FALLBACKS = {"pass": XDP_PASS, "drop": XDP_DROP}

# spread names as the config spells them -> xdpd_queue_conf.spread
SPREADS = {"flow_hash": XDPD_SPREAD_FLOW_HASH, "round_robin": XDPD_SPREAD_ROUND_ROBIN}

BPF_ANY = 0

# enum libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2


class BpfError(OSError):
    """A libbpf or kernel call failed.  .errno is the kernel's errno; str()
    is the full message (what was tried on what, errno name, way out)."""

    def __init__(self, err: int, message: str):
        super().__init__(err, message)

    def __str__(self) -> str:
        return self.strerror


# enum libbpf_errno (libbpf.h): libbpf's own codes above the kernel's
_LIBBPF_ERRNO = {
    4000: "LIBBPF_ERRNO__LIBELF", 4001: "LIBBPF_ERRNO__FORMAT",
    4002: "LIBBPF_ERRNO__KVERSION", 4003: "LIBBPF_ERRNO__ENDIAN",
    4004: "LIBBPF_ERRNO__INTERNAL", 4005: "LIBBPF_ERRNO__RELOC",
    4006: "LIBBPF_ERRNO__LOAD", 4007: "LIBBPF_ERRNO__VERIFY",
    4008: "LIBBPF_ERRNO__PROG2BIG", 4009: "LIBBPF_ERRNO__KVER",
    4010: "LIBBPF_ERRNO__PROGTYPE", 4011: "LIBBPF_ERRNO__WRNGPID",
    4012: "LIBBPF_ERRNO__INVSEQ", 4013: "LIBBPF_ERRNO__NLPARSE",
}


def errno_name(err: int) -> str:
    return _LIBBPF_ERRNO.get(err) or errname(err)


def bpf_error(err: int, what: str, hint: str = "") -> BpfError:
    msg = f"{what} failed: {errno_name(err)}"
    if hint:
        msg += f"; {hint}"
    return BpfError(err, msg)


def errno_hint(err: int) -> str:
    if err == errno.EPERM:
        return "xdpd needs root (CAP_BPF, CAP_NET_ADMIN)"
    return ""


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


class XdpMd(ctypes.Structure):
    # struct xdp_md {
    #         __u32 data;
    #         __u32 data_end;
    #         __u32 data_meta;
    #         __u32 ingress_ifindex;
    #         __u32 rx_queue_index;
    #         __u32 egress_ifindex;
    # };
    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


class BpfProgInfo(ctypes.Structure):
    # struct bpf_prog_info {          /* leading fields only; the kernel */
    #         __u32 type;             /* fills min(info_len, its size)   */
    #         __u32 id;
    #         __u8  tag[BPF_TAG_SIZE];
    #         __u32 jited_prog_len;
    #         __u32 xlated_prog_len;
    #         __aligned_u64 jited_prog_insns;     /* 0: the kernel copies no */
    #         __aligned_u64 xlated_prog_insns;    /* instructions            */
    #         __u64 load_time;
    #         __u32 created_by_uid;
    #         __u32 nr_map_ids;
    #         __aligned_u64 map_ids;
    #         char name[BPF_OBJ_NAME_LEN];
    #         ...
    # };
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    ]


class BpfXdpAttachOpts(ctypes.Structure):
    # struct bpf_xdp_attach_opts {
    #         size_t sz;
    #         int old_prog_fd;
    #         size_t :0;
    # };
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("old_prog_fd", ctypes.c_int),
    ]


class BpfXdpQueryOpts(ctypes.Structure):
    # struct bpf_xdp_query_opts {     /* libbpf 1.1 */
    #         size_t sz;
    #         __u32 prog_id;          /* output */
    #         __u32 drv_prog_id;      /* output */
    #         __u32 hw_prog_id;       /* output */
    #         __u32 skb_prog_id;      /* output */
    #         __u8 attach_mode;       /* output */
    #         size_t :0;
    # };
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    ]


class BpfTestRunOpts(ctypes.Structure):
    # struct bpf_test_run_opts {
    #         size_t sz;
    #         const void *data_in;
    #         void *data_out;
    #         __u32 data_size_in;
    #         __u32 data_size_out;
    #         const void *ctx_in;
    #         void *ctx_out;
    #         __u32 ctx_size_in;
    #         __u32 ctx_size_out;
    #         __u32 retval;           /* out */
    #         int repeat;
    #         __u32 duration;         /* out: ns per repetition */
    #         __u32 flags;
    #         __u32 cpu;
    #         __u32 batch_size;
    # };
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


# --- libbpf ------------------------------------------------------------------

# typedef int (*libbpf_print_fn_t)(enum libbpf_print_level level,
#                                  const char *, va_list ap);
# On x86_64 va_list is an array type, so the callee receives a pointer.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_void_p)

_lib = None
_print_cb = None        # the installed callback; must outlive every libbpf call
_vsnprintf = None
_VA_LIST_SIZE = 24      # sizeof(__va_list_tag) on x86_64: va_copy is a struct copy


def _format(fmt: bytes, ap: int) -> str:
    if _vsnprintf is None or not ap:
        return fmt.decode(errors="replace")
    # vsnprintf consumes its va_list; copy it first so a too-small buffer
    # can be retried (what va_copy does on x86_64).
    ap_copy = ctypes.create_string_buffer(_VA_LIST_SIZE)
    ctypes.memmove(ap_copy, ap, _VA_LIST_SIZE)
    buf = ctypes.create_string_buffer(1024)
    n = _vsnprintf(buf, len(buf), fmt, ctypes.addressof(ap_copy))
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        n = _vsnprintf(buf, len(buf), fmt, ap)
    if n < 0:
        return fmt.decode(errors="replace")
    return buf.value.decode(errors="replace")


_quiet = threading.local()


@contextlib.contextmanager
def libbpf_warnings_as_debug():
    """For calls whose failure is expected and reported by the caller (the
    kernel's "Active program does not match expected" on a detach that finds
    someone else's program): keep libbpf's warning out of the log."""
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = False


def _libbpf_print(level: int, fmt: bytes, ap: int) -> int:
    try:
        pylevel = logging.WARNING if level == LIBBPF_WARN else logging.DEBUG
        if getattr(_quiet, "on", False):
            pylevel = logging.DEBUG
        if log.isEnabledFor(pylevel):
            log.log(pylevel, "%s", _format(fmt, ap).rstrip("\n"))
    except Exception:  # an exception must not unwind into libbpf
        pass
    return 0


def _declare(lib) -> None:
    c_int, c_uint32, c_void_p, c_char_p = (ctypes.c_int, ctypes.c_uint32,
                                           ctypes.c_void_p, ctypes.c_char_p)
    sigs = {
        "libbpf_set_print": (c_void_p, [_PRINT_FN]),
        "libbpf_num_possible_cpus": (c_int, []),
        "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
        "bpf_object__load": (c_int, [c_void_p]),
        "bpf_object__close": (None, [c_void_p]),
        "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
        "bpf_object__find_map_fd_by_name": (c_int, [c_void_p, c_char_p]),
        "bpf_program__fd": (c_int, [c_void_p]),
        "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p,
                                           ctypes.POINTER(c_uint32)]),
        "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p,
                                        ctypes.c_uint64]),
        "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
        "bpf_xdp_attach": (c_int, [c_int, c_int, c_uint32,
                                   ctypes.POINTER(BpfXdpAttachOpts)]),
        "bpf_xdp_query": (c_int, [c_int, c_int,
                                  ctypes.POINTER(BpfXdpQueryOpts)]),
        "bpf_prog_test_run_opts": (c_int, [c_int,
                                           ctypes.POINTER(BpfTestRunOpts)]),
        "bpf_program__attach_xdp": (c_void_p, [c_void_p, c_int]),
        "bpf_link__destroy": (c_int, [c_void_p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def libbpf():
    """libbpf.so.1, declared and with its messages routed to logging;
    loaded on first use so that importing this module needs no libbpf."""
    global _lib, _print_cb, _vsnprintf
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise BpfError(errno.ENOENT, f"load libbpf.so.1 failed: {e}; "
                       "install libbpf 1.x (Debian: apt-get install libbpf1)") from None
    _declare(lib)
    if platform.machine() in ("x86_64", "AMD64"):
        libc = ctypes.CDLL(None, use_errno=True)
        _vsnprintf = libc.vsnprintf
        _vsnprintf.restype = ctypes.c_int
        _vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                               ctypes.c_char_p, ctypes.c_void_p]
    _print_cb = _PRINT_FN(_libbpf_print)
    lib.libbpf_set_print(_print_cb)
    _lib = lib
    return lib


def object_path() -> str:
    """The packaged XDP object, built next to this module by setup.py."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), OBJECT_NAME)
    if not os.path.exists(path):
        raise BpfError(errno.ENOENT, f"XDP object {path} not built; "
                       "run 'pip install .' or 'make build'")
    return path


def query_xdp(ifindex: int) -> dict:
    """What XDP program is attached to ifindex (in this thread's netns).

    {"prog_id": id or 0, "mode": "native"|"generic"|"offload"|None,
     "drv_prog_id", "skb_prog_id", "hw_prog_id": per-mode ids}.  With
    programs in two modes (offload next to native or generic), prog_id and
    mode name the native or generic one.
    """
    lib = libbpf()
    opts = BpfXdpQueryOpts(sz=ctypes.sizeof(BpfXdpQueryOpts))
    ret = lib.bpf_xdp_query(ifindex, 0, ctypes.byref(opts))
    if ret < 0:
        raise bpf_error(-ret, f"query XDP program on ifindex {ifindex}")
    ids = {"native": opts.drv_prog_id, "generic": opts.skb_prog_id,
           "offload": opts.hw_prog_id}
    prog_id, mode = 0, None
    for name in ("native", "generic", "offload"):
        if ids[name]:
            prog_id, mode = ids[name], name
            break
    return {"prog_id": prog_id, "mode": mode, "drv_prog_id": opts.drv_prog_id,
            "skb_prog_id": opts.skb_prog_id, "hw_prog_id": opts.hw_prog_id}


_PROG_BY_ID_HINTS = {errno.ENOENT: "no such program (unloaded)",
                     errno.EPERM: "opening a program by id needs CAP_SYS_ADMIN"}


def _prog_fd_by_id(prog_id: int, what: str) -> int:
    """A new fd for loaded program prog_id (the caller closes it)."""
    fd = libbpf().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise bpf_error(-fd, what, _PROG_BY_ID_HINTS.get(-fd, ""))
    return fd


def prog_name(prog_id: int) -> str:
    """The name of loaded program prog_id (bpf_prog_info.name, at most 15
    characters: what `bpftool prog` shows)."""
    return prog_info(prog_id)[0]


def prog_info(prog_id: int) -> tuple[str, str]:
    """(name, tag) of loaded program prog_id: the tag is the hash of its
    instructions, in hex, as `bpftool prog` shows it."""
    what = f"get info of BPF program id {prog_id}"
    fd = _prog_fd_by_id(prog_id, what)
    try:
        info = BpfProgInfo()
        info_len = ctypes.c_uint32(ctypes.sizeof(info))
        ret = libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(info_len))
        if ret < 0:
            raise bpf_error(-ret, what, errno_hint(-ret))
    finally:
        os.close(fd)
    return info.name.decode(errors="replace"), bytes(info.tag).hex()


def _detach_if_attached(ifindex: int, mode: str, prog_fd: int) -> int:
    """Detach the XDP program in `mode` from ifindex if it is prog_fd's
    (XDP_FLAGS_REPLACE with prog_fd as the expected old program: the kernel
    compares and detaches atomically).  Returns 0 or the errno: EEXIST when
    another program, or none, is attached."""
    opts = BpfXdpAttachOpts(sz=ctypes.sizeof(BpfXdpAttachOpts), old_prog_fd=prog_fd)
    with libbpf_warnings_as_debug():
        ret = libbpf().bpf_xdp_attach(ifindex, -1, XDP_FLAGS_REPLACE | _MODE_FLAGS[mode],
                                       ctypes.byref(opts))
    return -ret if ret < 0 else 0


def detach_xdp(ifindex: int, mode: str, prog_id: int) -> None:
    """Detach XDP program prog_id, attached in `mode` ("native" or
    "generic"), from ifindex, only if it is still the one attached there.
    For programs this process did not load (what a dead xdpd left).
    Raises BpfError: ENOENT if no program has that id any more, EEXIST if
    another program (or none) is attached, ENODEV if the netdev is gone.

    The kernel compares and detaches in one step (XDP_FLAGS_REPLACE) given
    an fd of the program, but opens a program by id only for CAP_SYS_ADMIN
    (bpf_prog_get_fd_by_id() in kernel/bpf/syscall.c), which xdpd's
    systemd unit does not grant.  Without it the attached program's id is
    read and, if it is prog_id, the program in `mode` detached: two calls,
    so a program attached between them would be detached instead."""
    what = f"detach XDP program id {prog_id} from ifindex {ifindex} ({mode})"
    fd = libbpf().bpf_prog_get_fd_by_id(prog_id)
    if fd == -errno.EPERM:                  # not CAP_SYS_ADMIN
        key = {"native": "drv_prog_id", "generic": "skb_prog_id"}[mode]
        err = errno.EEXIST if query_xdp(ifindex)[key] != prog_id else 0
        if not err:
            ret = libbpf().bpf_xdp_attach(ifindex, -1, _MODE_FLAGS[mode], None)
            err = -ret if ret < 0 else 0
    else:
        if fd < 0:
            raise bpf_error(-fd, what, _PROG_BY_ID_HINTS.get(-fd, ""))
        try:
            err = _detach_if_attached(ifindex, mode, fd)
        finally:
            os.close(fd)
    if err == errno.EEXIST:
        raise bpf_error(err, what, "it is no longer the program attached there")
    if err:
        raise bpf_error(err, what, errno_hint(err))
    log.debug("ifindex %d: detached XDP program id %d (%s)", ifindex, prog_id, mode)


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
        lib = libbpf()
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
        lib = libbpf()
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
            if i + 1 < len(tries) and err in (errno.EOPNOTSUPP, errno.EINVAL):
                # EOPNOTSUPP: the driver has no native XDP (expected with
                # auto); EINVAL: it has, but refused (MTU, offloads): say so.
                log.log(logging.INFO if err == errno.EOPNOTSUPP else logging.WARNING,
                        "%s: %s failed: %s; falling back to generic",
                        ifname, what, errno_name(err))
                continue
            if err == errno.EOPNOTSUPP and try_mode == "native":
                raise bpf_error(err, what, "try xdp_mode: generic")
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
        ret = libbpf().bpf_map_update_elem(self._conf_fd, ctypes.byref(key),
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
        lib = libbpf()
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
        ret = libbpf().bpf_map_update_elem(self._xsks_fd, ctypes.byref(key),
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
        ret = libbpf().bpf_map_delete_elem(self._xsks_fd, ctypes.byref(key))
        if ret < 0 and -ret != errno.ENOENT:
            raise bpf_error(-ret, f"clear {name}{self._where()}",
                         self._queue_hint(-ret))

    def queue_stats(self, queue: int) -> dict[str, int]:
        """queue_stats[queue] summed over the possible CPUs."""
        self._check_open()
        lib = libbpf()
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
            libbpf().bpf_object__close(self._obj)
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
