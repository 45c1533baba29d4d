"""AF_XDP sockets: create, register the UMEM, size the rings, bind.

Kernel-facing and policy-free: every function does one socket call (or a
short fixed sequence of them) and raises XskError with the errno and what
was tried on what.  The supervisor decides which sockets exist; workers
only ever receive their file descriptors (and map the rings themselves, in
the C fast path).

Kernel rules this module encodes (Documentation/networking/af_xdp.rst):
- The first socket registers the UMEM (XDP_UMEM_REG) and binds normally.
  Every other socket binds with XDP_SHARED_UMEM naming the first socket's
  fd, and, because it is on another (netdev, queue), brings its own FILL
  and COMPLETION ring (set up before bind).
- A shared-UMEM bind may not carry XDP_COPY/XDP_ZEROCOPY/XDP_USE_NEED_WAKEUP:
  it inherits the owner's mode (xp_assign_dev_shared()).  Copy versus
  zero-copy is therefore a property of the UMEM, not of one socket.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from dataclasses import dataclass

from xdpd.kernel.errors import CallError

AF_XDP = 44
SOL_XDP = 283

XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8

XDP_SHARED_UMEM = 1 << 0
XDP_COPY = 1 << 1
XDP_ZEROCOPY = 1 << 2
XDP_USE_NEED_WAKEUP = 1 << 3
XDP_USE_SG = 1 << 4            # multi-buffer: descriptor chains (Linux 6.6)

XDP_OPTIONS_ZEROCOPY = 1 << 0

# struct xdp_umem_reg {
#         __u64 addr;            /* start of packet data area */
#         __u64 len;             /* length of packet data area */
#         __u32 chunk_size;
#         __u32 headroom;
#         __u32 flags;
#         __u32 tx_metadata_len; /* since 6.8; older kernels take the 28-byte prefix */
# };
UMEM_REG = struct.Struct("=QQIIII")

# struct sockaddr_xdp {
#         __u16 sxdp_family;
#         __u16 sxdp_flags;
#         __u32 sxdp_ifindex;
#         __u32 sxdp_queue_id;
#         __u32 sxdp_shared_umem_fd;
# };
SOCKADDR_XDP = struct.Struct("=HHIII")

# struct xdp_statistics {
#         __u64 rx_dropped;               /* dropped for other reasons */
#         __u64 rx_invalid_descs;         /* dropped due to invalid descriptor */
#         __u64 tx_invalid_descs;         /* dropped due to invalid descriptor */
#         __u64 rx_ring_full;             /* dropped due to rx ring being full */
#         __u64 rx_fill_ring_empty_descs; /* failed to retrieve item from fill ring */
#         __u64 tx_ring_empty_descs;      /* failed to retrieve item from tx ring */
# };
XDP_STATISTICS_FIELDS = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs",
                         "rx_ring_full", "rx_fill_ring_empty_descs",
                         "tx_ring_empty_descs")
XDP_STATISTICS_LAYOUT = struct.Struct("=6Q")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.bind.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)


class XskError(CallError):
    """An AF_XDP socket call failed; errno is kept, the message says what was
    tried on what and, where there is one, the way out."""


@dataclass(frozen=True)
class RingSizes:
    rx: int
    tx: int
    fill: int
    completion: int


# <asm-generic/socket.h>; Python's socket module lacks the busy-poll ones.
SO_BUSY_POLL = 46
SO_PREFER_BUSY_POLL = 69
SO_BUSY_POLL_BUDGET = 70
# <linux/if_xdp.h> since 6.17: descriptors one sendto() may send in copy mode
XDP_MAX_TX_SKB_BUDGET = 9


def _setsockopt(sock: socket.socket, opt: int, value: bytes | int, what: str,
                level: int = SOL_XDP, hint: str = "") -> None:
    try:
        sock.setsockopt(level, opt, value)
    except OSError as e:
        raise XskError(e.errno, what, hint) from None


class XdpSocket:
    """One AF_XDP socket bound to (netdev, queue).

    Owned by the supervisor for its whole life; a worker gets `fd` (inherited
    across exec) and maps the rings of this socket itself.
    """

    def __init__(self, netdev: str, ifindex: int, queue: int):
        self.netdev = netdev
        self.ifindex = ifindex
        self.queue = queue
        self.zero_copy = False
        try:
            self._sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        except OSError as e:
            hint = ("AF_XDP sockets need CAP_NET_RAW" if e.errno == errno.EPERM else
                    "the kernel needs CONFIG_XDP_SOCKETS")
            raise XskError(e.errno, f"socket(AF_XDP) for {self.name}", hint) from None
        # its inode: which socket a slot has (hosting, fp_assign.xsk_ino)
        self.ino = os.fstat(self._sock.fileno()).st_ino

    @property
    def name(self) -> str:
        return f"{self.netdev}/q{self.queue}"

    @property
    def fd(self) -> int:
        return self._sock.fileno()

    def register_umem(self, addr: int, length: int, frame_size: int) -> None:
        reg = UMEM_REG.pack(addr, length, frame_size, 0, 0, 0)
        _setsockopt(self._sock, XDP_UMEM_REG, reg,
                    f"register UMEM ({length} bytes, {frame_size}-byte frames) on {self.name}")

    def set_rings(self, sizes: RingSizes, *, fill_completion: bool = True) -> None:
        """fill_completion=False: a socket that will share the FILL and
        COMPLETION rings of another socket on the same (netdev, queue)
        (a fanout member): the kernel refuses a pair of its own there."""
        # FILL/COMPLETION first: each (netdev, queue) of a shared UMEM needs
        # its own pair, and the kernel checks for it at bind time.
        rings = ((XDP_UMEM_FILL_RING, sizes.fill, "FILL"),
                 (XDP_UMEM_COMPLETION_RING, sizes.completion, "COMPLETION"),
                 (XDP_RX_RING, sizes.rx, "RX"),
                 (XDP_TX_RING, sizes.tx, "TX"))
        for opt, size, ring in rings[0 if fill_completion else 2:]:
            _setsockopt(self._sock, opt, size, f"set {ring} ring size {size} on {self.name}")

    def set_tx_ring(self, size: int) -> None:
        """A TX ring alone: a socket that only sends (a worker's direct
        socket on another queue), bound to a socket of that queue."""
        _setsockopt(self._sock, XDP_TX_RING, size, f"set TX ring size {size} on {self.name}")

    def bind(self, *, zero_copy: bool, shared_with: "XdpSocket | None" = None,
             multi_buffer: bool = False) -> None:
        """multi_buffer: XDP_USE_SG, packets longer than a frame as
        descriptor chains.  Only the socket that registers the UMEM says it
        (the kernel refuses flags on a shared bind): the UMEM remembers it,
        and every socket sharing the UMEM inherits it."""
        if shared_with is not None:
            flags, shared_fd = XDP_SHARED_UMEM, shared_with.fd
        else:
            flags = XDP_USE_NEED_WAKEUP | (XDP_ZEROCOPY if zero_copy else XDP_COPY)
            flags |= XDP_USE_SG if multi_buffer else 0
            shared_fd = 0
        addr = SOCKADDR_XDP.pack(AF_XDP, flags, self.ifindex, self.queue, shared_fd)
        if _libc.bind(self.fd, addr, len(addr)) != 0:
            err = ctypes.get_errno()
            mode = "zero-copy" if zero_copy else "copy"
            hint = ""
            if err == errno.EBUSY:
                hint = f"another AF_XDP socket is bound to {self.name}; is another xdpd running?"
            elif multi_buffer and shared_with is None and err in (errno.EINVAL,
                                                                   errno.EOPNOTSUPP):
                mode += ", multi-buffer"
                hint = (f"{self.netdev} or this kernel cannot take descriptor chains "
                        "(XDP_USE_SG: Linux 6.6+, and a driver with AF_XDP multi-buffer "
                        "in zero-copy mode); set umem.multi_buffer: off and an MTU that "
                        "fits one frame")
            elif zero_copy and err in (errno.EOPNOTSUPP, errno.EINVAL, errno.EPROTONOSUPPORT):
                hint = f"{self.netdev} has no AF_XDP zero-copy support; use zero_copy: auto or off"
            elif err == errno.EINVAL:
                hint = f"check that {self.netdev} has rx queue {self.queue} ('ethtool -l {self.netdev}')"
            raise XskError(err, f"bind AF_XDP socket to {self.name} ({mode})", hint)
        self.zero_copy = self._options_zero_copy()

    def set_busy_poll(self, usecs: int, budget: int) -> None:
        """Preferred busy polling: the worker's own recvfrom/sendto calls run
        the queue's NAPI poll (up to `budget` packets, spinning up to
        `usecs`), and the kernel keeps the interrupt path out of the way
        while the application keeps polling."""
        hint = "busy polling needs CAP_NET_ADMIN and a kernel with SO_PREFER_BUSY_POLL (5.11+)"
        for opt, value, name in ((SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL"),
                                 (SO_BUSY_POLL, usecs, "SO_BUSY_POLL"),
                                 (SO_BUSY_POLL_BUDGET, budget, "SO_BUSY_POLL_BUDGET")):
            _setsockopt(self._sock, opt, value, f"set {name}={value} on {self.name}",
                        level=socket.SOL_SOCKET, hint=hint)

    def set_tx_budget(self, budget: int) -> bool:
        """Let one sendto() send up to `budget` descriptors in copy mode
        (the kernel's default is 32).  False where the kernel predates the
        option (before 6.17); the default then stays."""
        try:
            self._sock.setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET, budget)
        except OSError as e:
            if e.errno == errno.ENOPROTOOPT:
                return False
            raise XskError(e.errno, f"set XDP_MAX_TX_SKB_BUDGET={budget} on {self.name}",
                           "workers.tx_budget must not exceed rings.tx") from None
        return True

    def _options_zero_copy(self) -> bool:
        raw = self._sock.getsockopt(SOL_XDP, XDP_OPTIONS, 4)
        return bool(struct.unpack("=I", raw)[0] & XDP_OPTIONS_ZEROCOPY)

    def statistics(self) -> dict[str, int]:
        try:
            raw = self._sock.getsockopt(SOL_XDP, XDP_STATISTICS, XDP_STATISTICS_LAYOUT.size)
        except OSError as e:
            raise XskError(e.errno, f"read XDP_STATISTICS of {self.name}") from None
        raw = raw.ljust(XDP_STATISTICS_LAYOUT.size, b"\0")
        return dict(zip(XDP_STATISTICS_FIELDS, XDP_STATISTICS_LAYOUT.unpack(raw)))

    def close(self) -> None:
        self._sock.close()
