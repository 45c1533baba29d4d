"""XDP tools for throughput measurements in the veth lab (bpf/lab.c).

The only packet source on veth fast enough to load xdpd is the kernel
itself: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES runs an XDP
program on frames built from a template, and turns its XDP_TX into a
redirect out of ctx.ingress_ifindex: on veth an ndo_xdp_xmit into the peer's
rx ring (the queue is the sending CPU modulo the peer's rx queues), which
the peer only accepts while an XDP program is attached to it.

    Generator          lab_gen run by test_run on, e.g., gen0: several Mpps
                       on one core; counts every frame it offers.
    CountingSink       lab_count attached (native) on a device: counts
                       packets, bytes, frames with the expected dst MAC; drops.
    DevmapForwarder    lab_fwd attached (native) on in0: optional MAC rewrite,
                       redirect to out0 through a DEVMAP: the in-kernel ceiling
                       xdpd is measured against.

Each object loads its own copy of lab.bpf.o (its own maps).  Attach and
detach happen inside the device's netns (labdaemon.run_in_netns); an attach
never replaces another program (XDP_FLAGS_UPDATE_IF_NOEXIST) and a detach
only removes our own (XDP_FLAGS_REPLACE with our fd).

Command line (run it inside the generator's netns):

    nsenter --net=/run/netns/NS python -m xdpd.lab.xdp gen --ifname gen0 \\
        --dst-mac 02:00:00:00:00:02 --src-mac 02:00:00:00:00:01 \\
        --size 64 --flows 256 --seconds 10 [--rate PPS] [--cpu N]

prints one JSON line: {"sent": N, "seconds": T, "pps": P, ...}.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import signal
import socket
import struct
import sys
import time

from xdpd.kernel import libbpf, xdp_program
from xdpd.kernel.libbpf import BpfError, bpf_error, errno_hint, library
from xdpd.lab.daemon import run_in_netns
from xdpd.lab.frames import ETH_HLEN, IP_HLEN, UDP_HLEN, parse_mac, udp4
from xdpd.lab.txring import TxRing, slot_size

OBJECT_NAME = "lab.bpf.o"

# include/uapi/linux/bpf.h
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
TEST_XDP_MAX_BATCH = 256          # net/bpf/test_run.c: the largest batch_size
LOOPBACK_IFINDEX = 1              # include/net/flow.h: lo, in every netns

# bpf/lab.c
LAB_CHECK_DST_MAC = 1 << 0
LAB_SET_DST_MAC = 1 << 1
LAB_SET_SRC_MAC = 1 << 2
LAB_MAGIC = 0x5844504C            # "XDPL"
LAB_HDR = struct.Struct("!IIH")   # struct lab_hdr: magic, flows, base_port

MIN_FRAME = 60                    # Ethernet minimum without the FCS
MAX_FRAME = 9014                  # MTU 9000 (jumbo) plus the Ethernet header
SRC_IP, DST_IP = "10.0.0.1", "10.0.0.2"
BASE_SRC_PORT, DST_PORT = 1024, 9  # 9: discard
MAX_FLOWS = 65536 - BASE_SRC_PORT


class LabConf(ctypes.Structure):
    # struct lab_conf {
    #         __u32 flags;
    #         __u8 expect_dst[ETH_ALEN];
    #         __u8 set_dst[ETH_ALEN];
    #         __u8 set_src[ETH_ALEN];
    #         __u8 pad[2];
    # };
    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("expect_dst", ctypes.c_uint8 * 6),
        ("set_dst", ctypes.c_uint8 * 6),
        ("set_src", ctypes.c_uint8 * 6),
        ("pad", ctypes.c_uint8 * 2),
    ]


class LabStats(ctypes.Structure):
    # struct lab_stats {
    #         __u64 packets;
    #         __u64 bytes;
    #         __u64 dst_mac_ok;
    #         __u64 redirected;
    #         __u64 redirect_failed;
    # };
    _fields_ = [
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("dst_mac_ok", ctypes.c_uint64),
        ("redirected", ctypes.c_uint64),
        ("redirect_failed", ctypes.c_uint64),
    ]


# --- frames ------------------------------------------------------------------

def build_frame(dst_mac: str | bytes, src_mac: str | bytes, size: int = 64,
                flows: int = 1) -> bytes:
    """An Ethernet/IPv4/UDP frame of size bytes (no FCS), 10.0.0.1:1024 ->
    10.0.0.2:9, valid IP checksum, UDP checksum 0.

    The UDP payload starts with lab_gen's header (magic, flows, base port
    1024) and is zero-padded: run by Generator, frame n of a CPU leaves with
    source port 1024 + n % flows."""
    dst, src = parse_mac(dst_mac), parse_mac(src_mac)
    if not MIN_FRAME <= size <= MAX_FRAME:
        raise ValueError(f"frame size {size}: expected {MIN_FRAME}..{MAX_FRAME} "
                         "bytes (without FCS)")
    if not 1 <= flows <= MAX_FLOWS:
        raise ValueError(f"flows {flows}: expected 1..{MAX_FLOWS}")
    payload = LAB_HDR.pack(LAB_MAGIC, flows, BASE_SRC_PORT)
    payload += bytes(size - ETH_HLEN - IP_HLEN - UDP_HLEN - len(payload))
    return udp4(src, dst, socket.inet_aton(SRC_IP), socket.inet_aton(DST_IP),
                BASE_SRC_PORT, DST_PORT, payload)


# --- the object ----------------------------------------------------------------

def object_path() -> str:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), OBJECT_NAME)
    if not os.path.exists(path):
        raise BpfError(errno.ENOENT, f"lab XDP object {path} not built; run "
                       "'.venv/bin/python setup.py build_ext --inplace'")
    return path


def _ncpus() -> int:
    n = library().libbpf_num_possible_cpus()
    if n < 0:
        raise bpf_error(-n, "count possible CPUs")
    return n


class _LabObject:
    """One loaded copy of lab.bpf.o, used for program `prog_name`."""

    def __init__(self, prog_name: str, path: str | None = None):
        lib = library()
        self.prog_name = prog_name
        self._obj = None
        self.prog_fd, self.prog_id = -1, 0
        path = path or object_path()
        what = f"load {prog_name} from {path}"
        ctypes.set_errno(0)
        obj = lib.bpf_object__open_file(os.fsencode(path), None)
        if not obj:
            err = ctypes.get_errno() or errno.EINVAL
            raise bpf_error(err, what, "not an object built from bpf/lab.c"
                         if err not in (errno.ENOENT, errno.EACCES, errno.EPERM)
                         else errno_hint(err))
        self._obj = obj
        try:
            ret = lib.bpf_object__load(obj)
            if ret < 0:
                raise bpf_error(-ret, what, errno_hint(-ret) or
                             "the verifier log is in the xdpd.bpf debug log")
            prog = lib.bpf_object__find_program_by_name(obj, prog_name.encode())
            if not prog:
                raise bpf_error(errno.ENOENT, what, f"no program {prog_name} in it")
            self._prog = prog               # struct bpf_program *
            self.prog_fd = lib.bpf_program__fd(prog)
            info = libbpf.BpfProgInfo()
            size = ctypes.c_uint32(ctypes.sizeof(info))
            ret = lib.bpf_obj_get_info_by_fd(self.prog_fd, ctypes.byref(info),
                                             ctypes.byref(size))
            self.prog_id = info.id if ret == 0 else 0
            self._fds = {}
            for name in ("lab_conf", "lab_stats", "tx_port"):
                fd = lib.bpf_object__find_map_fd_by_name(obj, name.encode())
                if fd < 0:
                    raise bpf_error(-fd, what, f"no map {name} in it")
                self._fds[name] = fd
        except BaseException:
            self._close_obj()
            raise
        self._ncpus = _ncpus()

    def _check_open(self) -> None:
        if not self._obj:
            raise ValueError(f"{self.prog_name} (prog id {self.prog_id}) is closed")

    def _update(self, map_name: str, key: int, value, what: str) -> None:
        self._check_open()
        k = ctypes.c_uint32(key)
        ret = library().bpf_map_update_elem(self._fds[map_name], ctypes.byref(k),
                                            ctypes.byref(value), libbpf.BPF_ANY)
        if ret < 0:
            raise bpf_error(-ret, what, errno_hint(-ret))

    def set_conf(self, conf: LabConf) -> None:
        self._update("lab_conf", 0, conf, f"write lab_conf of {self.prog_name}")

    def stats(self) -> dict[str, int]:
        """lab_stats summed over the possible CPUs."""
        self._check_open()
        vals = (LabStats * self._ncpus)()
        key = ctypes.c_uint32(0)
        ret = library().bpf_map_lookup_elem(self._fds["lab_stats"],
                                            ctypes.byref(key), vals)
        if ret < 0:
            raise bpf_error(-ret, f"read lab_stats of {self.prog_name}", errno_hint(-ret))
        return {n: sum(getattr(v, n) for v in vals) for n, _ in LabStats._fields_}

    def reset_stats(self) -> None:
        self._update("lab_stats", 0, (LabStats * self._ncpus)(),
                     f"reset lab_stats of {self.prog_name}")

    def _close_obj(self) -> None:
        if self._obj:
            library().bpf_object__close(self._obj)
            self._obj = None
        self.prog_fd = -1


class _Attached:
    """A _LabObject's program attached natively on one device in a netns."""

    def __init__(self, lab: _LabObject, ns: str, ifname: str):
        self.lab, self.ns, self.ifname = lab, ns, ifname
        self.ifindex = 0

    def attach(self) -> None:
        """In the netns: XDP_FLAGS_UPDATE_IF_NOEXIST | native."""
        run_in_netns(self.ns, self._attach)

    def _attach(self) -> None:
        what = f"attach {self.lab.prog_name} to {self.ns}/{self.ifname} (native)"
        try:
            ifindex = socket.if_nametoindex(self.ifname)
        except OSError:
            raise bpf_error(errno.ENODEV, what, f"no device {self.ifname} in "
                         f"netns {self.ns}") from None
        ret = library().bpf_xdp_attach(
            ifindex, self.lab.prog_fd,
            libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST | libbpf.XDP_FLAGS_DRV_MODE, None)
        if ret < 0:
            err = -ret
            if err in (errno.EBUSY, errno.EEXIST):
                raise xdp_program.XdpProgram._busy_error(what, ifindex, self.ifname)
            raise bpf_error(err, what, errno_hint(err))
        self.ifindex = ifindex

    def detach(self) -> None:
        """Remove our program, and only ours; idempotent.  A netns or device
        that is gone took the program with it."""
        if not self.ifindex:
            return
        try:
            run_in_netns(self.ns, self._detach)
        except FileNotFoundError:        # the netns is gone
            pass
        self.ifindex = 0

    def _detach(self) -> None:
        opts = libbpf.BpfXdpAttachOpts(sz=ctypes.sizeof(libbpf.BpfXdpAttachOpts),
                                    old_prog_fd=self.lab.prog_fd)
        with libbpf.libbpf_warnings_as_debug():
            ret = library().bpf_xdp_attach(
                self.ifindex, -1, libbpf.XDP_FLAGS_REPLACE | libbpf.XDP_FLAGS_DRV_MODE,
                ctypes.byref(opts))
        err = -ret if ret < 0 else 0
        if err in (0, errno.EEXIST, errno.ENODEV):
            # EEXIST: not ours (anymore): leave it; ENODEV: device gone
            if err == errno.EEXIST:
                xdp_program.log.debug("%s/%s: %s no longer attached; not detaching",
                              self.ns, self.ifname, self.lab.prog_name)
            return
        raise bpf_error(err, f"detach {self.lab.prog_name} from "
                     f"{self.ns}/{self.ifname}", errno_hint(err))


class _Tool:
    """close() / context manager shared by the classes below."""

    _lab: _LabObject | None = None
    _att: list[_Attached] | tuple = ()

    def close(self) -> None:
        """Detach what is attached, then free the object.  Idempotent; the
        object is freed even if a detach raised."""
        try:
            for att in reversed(self._att):
                att.detach()
        finally:
            if self._lab is not None:
                self._lab._close_obj()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def prog_id(self) -> int:
        return self._lab.prog_id if self._lab else 0


# --- the tools -----------------------------------------------------------------

# Where the kernel refuses live frames (EPERM: kernel lockdown, or a
# sandbox without some capability), the generator sends through AF_PACKET.
LIVE_REFUSED = (errno.EPERM, errno.EOPNOTSUPP)


class PacketSender:
    """lab_gen's work done from user space: the same frames (the UDP source
    port of frame n set to base + n % flows, as lab_gen sets it) sent
    through an AF_PACKET transmit ring bound to the device, bypassing the
    qdisc (txring.TxRing), so that, as with live frames, a frame sent from
    CPU n lands on the veth peer's rx queue n (net/packet/af_packet.c:
    packet_pick_tx_queue).  Slower than live frames (about half a million
    64-byte frames a second from one CPU of the lab's 2-CPU VM, against
    several million), for hosts where the kernel refuses
    BPF_F_TEST_XDP_LIVE_FRAMES.  Must be made on a thread in the
    device's network namespace."""

    def __init__(self, ifindex: int):
        self.ifindex = ifindex
        self._ring = TxRing(ifindex)
        self._done = 0                      # sent by rings already closed
        self._patterns: dict[bytes, list[bytes]] = {}

    @property
    def sent(self) -> int:
        return self._done + self._ring.sent

    @staticmethod
    def _flows(frame: bytes) -> tuple[int, int]:
        """(flows, base port) of a build_frame() frame; (1, 0) otherwise."""
        l4 = ETH_HLEN + IP_HLEN
        if (len(frame) < l4 + UDP_HLEN + LAB_HDR.size or frame[12:14] != b"\x08\x00" or
                frame[ETH_HLEN] != 0x45 or frame[ETH_HLEN + 9] != socket.IPPROTO_UDP):
            return 1, 0
        magic, flows, base = LAB_HDR.unpack_from(frame, l4 + UDP_HLEN)
        return (flows, base) if magic == LAB_MAGIC and flows > 1 else (1, 0)

    def _pattern(self, frame: bytes) -> list[bytes]:
        """The frames for n = 0, 1, ...: one per flow, in port order."""
        pattern = self._patterns.get(frame)
        if pattern is None:
            flows, base = self._flows(frame)
            off = ETH_HLEN + IP_HLEN
            pattern = [frame] if flows == 1 else [
                frame[:off] + struct.pack("!H", base + i) + frame[off + 2:]
                for i in range(flows)]
            if len(self._patterns) > 16:
                self._patterns.clear()
            self._patterns[frame] = pattern
        return pattern

    def send(self, frame: bytes, count: int) -> int:
        """count frames, each sent once the device takes it: a full peer
        ring (ENOBUFS with the qdisc bypassed) is waited out, not a loss."""
        if not self._ring.fits(len(frame)):
            slot = slot_size(len(frame))    # ValueError for a frame too large
            self._done += self._ring.sent
            self._ring.close()
            self._ring = TxRing(self.ifindex, slot=slot)
        # The ring's frame n carries port base + n % flows.
        return self._ring.send(self._pattern(frame), count)

    def close(self) -> None:
        self._ring.close()


class Generator(_Tool):
    """lab_gen, run by BPF_PROG_TEST_RUN in live-frames mode.

    run() must be called from a thread inside the netns of the device it
    sends out of; one thread per Generator (the count is the difference of
    its per-CPU counter around the call).

    A test run (repeat > 1) of an XDP program that is not attached anywhere
    adds it to the kernel's XDP dispatcher and removes it again afterwards,
    two RCU grace periods: ~25 ms per call, whatever the count.  So the
    first run() also attaches lab_gen, in generic mode through a BPF link,
    to lo of the netns it runs in (lab_gen passes whatever lo carries,
    uncounted); close() destroys the link.  If lo is taken (another
    Generator in the same netns) runs still work, each paying that cost:
    send more frames per call.

    Where the kernel refuses live frames (EPERM: kernel lockdown, or a
    sandbox without some capability) it says so once and sends the same
    frames through AF_PACKET instead (PacketSender: slower, same queues)."""

    def __init__(self, path: str | None = None, hold_dispatcher: bool = True):
        self._att = []
        self.fallback: PacketSender | None = None
        self._hold = None                   # struct bpf_link *
        self._hold_tried = not hold_dispatcher
        self._lab = _LabObject("lab_gen", path)

    @property
    def holds_dispatcher(self) -> bool:
        return bool(self._hold)

    def _hold_dispatcher(self) -> None:
        self._hold_tried = True
        lib = library()
        ctypes.set_errno(0)
        with libbpf.libbpf_warnings_as_debug():
            link = lib.bpf_program__attach_xdp(self._lab._prog, LOOPBACK_IFINDEX)
        if link:
            self._hold = link
            return
        err = ctypes.get_errno() or errno.EINVAL
        xdp_program.log.info("lab_gen: not attached to lo (%s), so every test run "
                     "adds it to the XDP dispatcher and removes it again "
                     "(~25 ms per call)", libbpf.errno_name(err))

    def close(self) -> None:
        if self._hold:
            library().bpf_link__destroy(self._hold)
            self._hold = None
        if self.fallback is not None:
            self.fallback.close()
            self.fallback = None
        super().close()

    def sent(self) -> int:
        """Frames offered so far (lab_gen's counter, all CPUs, and what the
        AF_PACKET fallback sent)."""
        return self._lab.stats()["packets"] + (self.fallback.sent if self.fallback else 0)

    def run(self, ifindex: int, frame: bytes, count: int,
            batch_size: int = 64) -> int:
        """Send count copies of frame out of ifindex in one test run; returns
        the frames lab_gen handed to the kernel.  That is count unless a
        signal interrupted the call (the kernel answers EINTR and says
        nothing about progress: the counter does).  Frames the peer's ring
        cannot take are dropped by the kernel after that: `ethtool -S` of
        the sending veth counts them as tx_queue_N_xdp_xmit_errors (and
        the ones taken as tx_queue_N_xdp_xmit)."""
        if not 1 <= count <= 0x7FFFFFFF:
            raise ValueError(f"count {count}: expected 1..{0x7FFFFFFF}")
        if not 1 <= batch_size <= TEST_XDP_MAX_BATCH:
            raise ValueError(f"batch_size {batch_size}: expected 1..{TEST_XDP_MAX_BATCH}")
        if len(frame) < ETH_HLEN:
            raise ValueError(f"a frame needs at least {ETH_HLEN} bytes, got {len(frame)}")
        lab = self._lab
        lab._check_open()
        buf = ctypes.create_string_buffer(bytes(frame), len(frame))
        ctx = libbpf.XdpMd(data=0, data_end=len(frame), ingress_ifindex=ifindex,
                        rx_queue_index=0)
        opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts),
                                  data_in=ctypes.addressof(buf),
                                  data_size_in=len(frame),
                                  ctx_in=ctypes.addressof(ctx),
                                  ctx_size_in=ctypes.sizeof(ctx),
                                  repeat=count, flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                                  batch_size=batch_size)
        if self.fallback is not None:
            return self.fallback.send(bytes(frame), count)
        if not self._hold_tried and count > 1:
            self._hold_dispatcher()
        before = self.sent()
        ret = library().bpf_prog_test_run_opts(lab.prog_fd, ctypes.byref(opts))
        if -ret in LIVE_REFUSED and self.sent() == before:
            xdp_program.log.warning("lab_gen: the kernel refuses live frames (%s); sending "
                            "through AF_PACKET instead (slower, same queues)",
                            libbpf.errno_name(-ret))
            self.fallback = PacketSender(ifindex)
            return self.fallback.send(bytes(frame), count)
        if ret < 0 and -ret != errno.EINTR:
            err = -ret
            hint = errno_hint(err)
            if err == errno.ENODEV:
                hint = (f"ifindex {ifindex} must be a netdev in this thread's "
                        "network namespace")
            elif err == errno.EINVAL:
                hint = ("a kernel with BPF_F_TEST_XDP_LIVE_FRAMES (5.18+), a frame "
                        "that fits in a page, ifindex with rx queue 0")
            raise bpf_error(err, f"live test run of lab_gen out of ifindex "
                         f"{ifindex} ({count} frames of {len(frame)} bytes)", hint)
        return self.sent() - before


class CountingSink(_Tool):
    """lab_count attached natively on ifname in netns ns: counts, drops."""

    def __init__(self, ns: str, ifname: str, expect_dst_mac: str | bytes | None = None,
                 path: str | None = None):
        self._att = []
        self.ns, self.ifname = ns, ifname
        self._lab = _LabObject("lab_count", path)
        try:
            conf = LabConf()
            if expect_dst_mac is not None:
                conf.flags = LAB_CHECK_DST_MAC
                conf.expect_dst[:] = parse_mac(expect_dst_mac)
            self._lab.set_conf(conf)
            att = _Attached(self._lab, ns, ifname)
            att.attach()
            self._att.append(att)
        except BaseException:
            self.close()
            raise

    def read(self) -> dict[str, int]:
        """{"packets", "bytes", "dst_mac_ok"} summed over the CPUs
        (dst_mac_ok stays 0 without expect_dst_mac)."""
        s = self._lab.stats()
        return {k: s[k] for k in ("packets", "bytes", "dst_mac_ok")}

    def reset(self) -> None:
        self._lab.reset_stats()


class DevmapForwarder(_Tool):
    """lab_fwd attached natively on in_ifname in netns ns, redirecting to
    out_ifname (same netns) through DEVMAP slot 0, rewriting the MACs given."""

    def __init__(self, ns: str, in_ifname: str, out_ifname: str,
                 dst_mac: str | bytes | None = None,
                 src_mac: str | bytes | None = None, path: str | None = None):
        self._att = []
        self.ns, self.in_ifname, self.out_ifname = ns, in_ifname, out_ifname
        self._lab = _LabObject("lab_fwd", path)
        try:
            conf = LabConf()
            if dst_mac is not None:
                conf.flags |= LAB_SET_DST_MAC
                conf.set_dst[:] = parse_mac(dst_mac)
            if src_mac is not None:
                conf.flags |= LAB_SET_SRC_MAC
                conf.set_src[:] = parse_mac(src_mac)
            self._lab.set_conf(conf)
            # a DEVMAP resolves the ifindex in the writer's netns
            run_in_netns(ns, self._set_target)
            att = _Attached(self._lab, ns, in_ifname)
            att.attach()
            self._att.append(att)
        except BaseException:
            self.close()
            raise

    def _set_target(self) -> None:
        what = f"put {self.ns}/{self.out_ifname} into tx_port[0] of lab_fwd"
        try:
            ifindex = socket.if_nametoindex(self.out_ifname)
        except OSError:
            raise bpf_error(errno.ENODEV, what, f"no device {self.out_ifname} in "
                         f"netns {self.ns}") from None
        self._lab._update("tx_port", 0, ctypes.c_uint32(ifindex), what)

    def read(self) -> dict[str, int]:
        """{"packets", "bytes", "redirected", "redirect_failed"} over the CPUs."""
        s = self._lab.stats()
        return {k: s[k] for k in ("packets", "bytes", "redirected", "redirect_failed")}

    def reset(self) -> None:
        self._lab.reset_stats()


# --- rr_redirect on a packet: BPF_PROG_TEST_RUN ------------------------------

def test_run(prog: "xdp_program.XdpProgram", data: bytes, ingress_ifindex: int = 0,
             rx_queue_index: int = 0, repeat: int = 1) -> int:
    """Run the daemon's XDP program on data with BPF_PROG_TEST_RUN; returns
    its verdict.  ingress_ifindex must name a netdev in this thread's netns
    with more than rx_queue_index rx queues (or be 0 with queue 0).  For the
    tests and benchmarks: the daemon itself never runs its program so."""
    return timed_run(prog, data, ingress_ifindex, rx_queue_index, repeat)[0]


test_run.__test__ = False          # pytest: a helper, not a test


def timed_run(prog: "xdp_program.XdpProgram", data: bytes, ingress_ifindex: int = 0,
              rx_queue_index: int = 0, repeat: int = 1) -> tuple[int, int]:
    """test_run(), and the kernel's average time per repetition in ns."""
    if prog.prog_fd < 0:
        raise ValueError(f"{xdp_program.PROG_NAME} (prog id {prog.prog_id}) is closed")
    buf = ctypes.create_string_buffer(bytes(data), len(data))
    ctx = libbpf.XdpMd(data=0, data_end=len(data), data_meta=0,
                    ingress_ifindex=ingress_ifindex,
                    rx_queue_index=rx_queue_index, egress_ifindex=0)
    opts = libbpf.BpfTestRunOpts(sz=ctypes.sizeof(libbpf.BpfTestRunOpts),
                              data_in=ctypes.addressof(buf),
                              data_size_in=len(data),
                              ctx_in=ctypes.addressof(ctx),
                              ctx_size_in=ctypes.sizeof(ctx),
                              repeat=repeat)
    ret = library().bpf_prog_test_run_opts(prog.prog_fd, ctypes.byref(opts))
    if ret < 0:
        err = -ret
        hint = errno_hint(err)
        if err == errno.EINVAL and len(data) < 14:
            hint = f"a packet needs at least 14 bytes, got {len(data)}"
        elif err == errno.EINVAL and not ingress_ifindex and rx_queue_index:
            hint = "an rx queue other than 0 needs ingress_ifindex"
        elif err == errno.EINVAL and ingress_ifindex:
            hint = (f"does ifindex {ingress_ifindex} have more than "
                    f"{rx_queue_index} rx queues?")
        elif err == errno.ENODEV:
            hint = "ingress_ifindex must be a netdev in this network namespace"
        raise bpf_error(err, f"test run of {xdp_program.PROG_NAME} (ifindex "
                        f"{ingress_ifindex}, rx queue {rx_queue_index})", hint)
    return opts.retval, opts.duration


# --- command line ----------------------------------------------------------------

CHUNK = 65536           # frames per test run when not pacing


def _gen(args) -> int:
    frame = build_frame(args.dst_mac, args.src_mac, args.size, args.flows)
    try:
        ifindex = socket.if_nametoindex(args.ifname)
    except OSError:
        print(f"xdpd.lab.xdp gen: no device {args.ifname} in this network namespace",
              file=sys.stderr)
        return 2
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    stop = False

    def on_signal(signum, frame_):
        nonlocal stop
        stop = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    # Pacing: a call whenever the schedule (rate * elapsed) is a chunk
    # (about 1 ms of frames) ahead of what was sent; within a call frames
    # leave at full speed.
    chunk = CHUNK if not args.rate else max(1, min(CHUNK, args.rate // 1000))
    sent = calls = 0
    with Generator(args.object) as gen:
        start = time.monotonic()
        deadline = start + args.seconds
        next_report = start
        while not stop:
            now = time.monotonic()
            if now >= deadline:
                break
            n = chunk
            if args.rate:
                due = int(args.rate * (now - start)) - sent
                if due < chunk:
                    time.sleep(min(deadline - now, (chunk - due) / args.rate))
                    continue
                n = min(CHUNK, due)     # catch up after a late wake-up
            sent += gen.run(ifindex, frame, n, args.batch_size)
            calls += 1
            if args.progress and time.monotonic() >= next_report:
                # CLOCK_MONOTONIC is one clock for every process on the
                # host: a reader can cut a measurement window out of these
                t = time.monotonic()
                print(json.dumps({"t": t, "progress": sent}), flush=True)
                next_report = t + args.progress
        seconds = time.monotonic() - start
        via = "af_packet" if gen.fallback is not None else "live"
    print(json.dumps({"sent": sent, "seconds": round(seconds, 6),
                      "pps": round(sent / seconds) if seconds > 0 else 0,
                      "calls": calls, "size": args.size, "flows": args.flows,
                      "cpu": args.cpu, "via": via}), flush=True)
    return 0


def _positive(kind):
    def conv(text):
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return v
    return conv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xdpd.lab.xdp",
                                 description="XDP lab tools (bpf/lab.c)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="send frames out of a veth with live-frames "
                       "test runs (run it inside the device's netns)")
    g.add_argument("--ifname", required=True)
    g.add_argument("--dst-mac", required=True)
    g.add_argument("--src-mac", required=True)
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--flows", type=int, default=1)
    g.add_argument("--seconds", type=_positive(float), default=10.0)
    g.add_argument("--rate", type=_positive(int), default=None,
                   help="frames per second (default: as fast as it goes)")
    g.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    g.add_argument("--batch-size", type=int, default=64,
                   help=f"test_run batch (1..{TEST_XDP_MAX_BATCH})")
    g.add_argument("--progress", type=_positive(float), default=None, metavar="SECONDS",
                   help="also print {\"t\": monotonic time, \"progress\": frames sent} "
                        "lines this often")
    g.add_argument("--object", default=None,
                   help="lab.bpf.o to load (default: the one next to this module)")
    args = ap.parse_args(argv)
    try:
        parse_mac(args.dst_mac), parse_mac(args.src_mac)
        build_frame(args.dst_mac, args.src_mac, args.size, args.flows)
        if not 1 <= args.batch_size <= TEST_XDP_MAX_BATCH:
            raise ValueError(f"--batch-size: expected 1..{TEST_XDP_MAX_BATCH}")
    except ValueError as e:
        ap.error(str(e))
    try:
        return _gen(args)
    except (BpfError, OSError) as e:
        print(f"xdpd.lab.xdp gen: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
