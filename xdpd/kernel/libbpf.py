"""The public call layer over libbpf (ctypes) and the kernel's XDP calls.

Thin on purpose: every function does one libbpf call (or a short fixed
sequence of them), keeps the kernel's errno in a BpfError, and says in the
message what was tried on what and, where there is one, the way out.

libbpf is reached through ctypes (libbpf.so.1, the 1.x ABI: functions return
a negative errno, pointer-returning ones return NULL and set errno).  The C
structures libbpf and the kernel take are mirrored here with ctypes, each
with its C declaration beside it.

Owns: library() (the loaded libbpf, its functions declared once), BpfError
and its errno words, libbpf's log routed into Python logging, and the
program-independent calls: query what is attached, name a program by id,
detach.  Must not: hold policy (which queues, which fallback, when to
attach: the supervisor's business) or know rr_redirect's maps
(xdp_program.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import platform
import threading

from xdpd.kernel.errors import errname

log = logging.getLogger("xdpd.bpf")


XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 0, 1, 2, 3, 4


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


def library():
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


def query_xdp(ifindex: int) -> dict:
    """What XDP program is attached to ifindex (in this thread's netns).

    {"prog_id": id or 0, "mode": "native"|"generic"|"offload"|None,
     "drv_prog_id", "skb_prog_id", "hw_prog_id": per-mode ids}.  With
    programs in two modes (offload next to native or generic), prog_id and
    mode name the native or generic one.
    """
    lib = library()
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
    fd = library().bpf_prog_get_fd_by_id(prog_id)
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
        ret = library().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(info_len))
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
        ret = library().bpf_xdp_attach(ifindex, -1, XDP_FLAGS_REPLACE | _MODE_FLAGS[mode],
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
    fd = library().bpf_prog_get_fd_by_id(prog_id)
    if fd == -errno.EPERM:                  # not CAP_SYS_ADMIN
        key = {"native": "drv_prog_id", "generic": "skb_prog_id"}[mode]
        err = errno.EEXIST if query_xdp(ifindex)[key] != prog_id else 0
        if not err:
            ret = library().bpf_xdp_attach(ifindex, -1, _MODE_FLAGS[mode], None)
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


