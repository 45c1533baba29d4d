"""An AF_PACKET transmit ring (PACKET_TX_RING, TPACKET_V2), qdisc bypassed:
the lab's fastest user-space sender, for hosts where the kernel refuses BPF
live frames.

A plain AF_PACKET socket costs a syscall per frame (a few hundred kpps from
Python).  With a transmit ring the frames lie in memory shared with the
kernel: user space marks a run of slots "send request" and one send() hands
them all to the device (net/packet/af_packet.c: tpacket_snd).  The frames
are written into their slots only when the pattern changes, so a steady
stream costs Python one strided write and one syscall per ring's worth of
frames.

Backpressure: with the qdisc bypassed a full veth peer answers ENOBUFS; the
kernel then leaves the refused slot marked and its head on it, so the next
send() starts there again.  Nothing is lost, and a frame counts as sent only
once the kernel took it, as with the per-frame socket.

A blocking send() returns once every marked slot was handed on and its skb
freed (the kernel waits for its completions), so a slot is never written
while the kernel may still read it.
"""
from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
from typing import Sequence

from xdpd.lab.traffic import SOL_PACKET

# include/uapi/linux/if_packet.h
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_QDISC_BYPASS = 20
TPACKET_V2 = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TPACKET_REQ = struct.Struct("IIII")      # block_size, block_nr, frame_size, frame_nr
# struct tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec, vlan tci,
# vlan tpid, padding; the frame's data follows at TPACKET_ALIGN(32) = 32.
# A transmitted frame's data starts at tp_hdrlen - sizeof(struct
# sockaddr_ll) unless PACKET_TX_HAS_OFF is set: 52 - 20 = 32.
HDR_STATUS = struct.Struct("I")
HDR_LEN_OFF = 4
DATA_OFF = 32

SLOTS = 512                              # a ring's frames
MIN_SLOT = 2048                          # bytes per slot (a power of two)
MAX_SLOT = 16384                         # the largest frame + DATA_OFF fits


def slot_size(frame_len: int) -> int:
    """The smallest power of two from MIN_SLOT that holds a frame of
    frame_len bytes and the slot's header; ValueError past MAX_SLOT."""
    size = MIN_SLOT
    while size < frame_len + DATA_OFF:
        size *= 2
    if size > MAX_SLOT:
        raise ValueError(f"a frame of {frame_len} bytes does not fit a transmit ring "
                         f"slot (at most {MAX_SLOT - DATA_OFF})")
    return size


class TxRing:
    """A transmit ring bound to the device ifindex (of the calling thread's
    network namespace).  send(frames, count) sends frames[n % len(frames)]
    for the next count values of its running frame number n."""

    def __init__(self, ifindex: int, slot: int = MIN_SLOT, slots: int = SLOTS):
        self.ifindex = ifindex
        self.slot = slot
        self.slots = slots
        self.sent = 0                       # n: frames the kernel took
        self._head = 0                      # the next slot to send from
        self._held: Sequence[bytes] | None = None   # the pattern in the slots
        self._phase = 0                     # (n - head) mod len(pattern) it was written for
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._ring = self._status = self._requests = None
        try:
            sock = self._sock
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            block = max(slot, mmap.PAGESIZE)
            per_block = block // slot
            sock.setsockopt(SOL_PACKET, PACKET_TX_RING,
                            TPACKET_REQ.pack(block, slots // per_block, slot, slots))
            sock.bind((socket.if_indextoname(ifindex), 0))
            self._ring = mmap.mmap(sock.fileno(), slot * slots)
            self._status = memoryview(self._ring).cast("I")
            # what _mark() writes into a run of status words
            self._requests = memoryview(
                HDR_STATUS.pack(TP_STATUS_SEND_REQUEST) * slots).cast("I")
        except BaseException:
            self.close()
            raise

    def fits(self, frame_len: int) -> bool:
        return frame_len + DATA_OFF <= self.slot

    def _write(self, frames: Sequence[bytes], first: int, slots: int) -> None:
        """Write the frames for the next `slots` slots from the head, the
        first being frames[first % len(frames)]."""
        ring, size, count = self._ring, self.slot, len(frames)
        for j in range(slots):
            frame = frames[(first + j) % count]
            base = ((self._head + j) % self.slots) * size
            struct.pack_into("I", ring, base + HDR_LEN_OFF, len(frame))
            ring[base + DATA_OFF:base + DATA_OFF + len(frame)] = frame

    def _mark(self, start: int, slots: int) -> None:
        """Mark slots start..start+slots-1 (no wrap) as send requests."""
        step = self.slot // HDR_STATUS.size
        view = self._status[start * step:(start + slots) * step:step]
        view[:] = self._requests[:slots]

    def _kick(self) -> None:
        """Hand every marked slot to the kernel; a full device (ENOBUFS,
        EAGAIN) is waited out: the kernel resumes at the refused slot."""
        while True:
            try:
                self._sock.send(b"")
                return
            except OSError as e:
                if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                os.sched_yield()

    def send(self, frames: Sequence[bytes], count: int) -> int:
        """Send count frames, frame n being frames[n % len(frames)]; each
        must fit (fits()).  Returns count."""
        if not frames:
            raise ValueError("no frames to send")
        cyclic = self.slots % len(frames) == 0
        left = count
        while left:
            run = min(left, self.slots - self._head)
            phase = (self.sent - self._head) % len(frames)
            if not cyclic:
                self._write(frames, self.sent, run)
            elif self._held is not frames or self._phase != phase:
                # Every slot's frame is fixed while the pattern is: write all.
                self._write(frames, self.sent, self.slots)
                self._held, self._phase = frames, phase
            self._mark(self._head, run)
            self._kick()
            self.sent += run
            left -= run
            self._head = (self._head + run) % self.slots
        return count

    def close(self) -> None:
        for view in (self._requests, self._status):
            if view is not None:
                view.release()
        self._requests = self._status = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._sock.close()
