"""tcpdump filter expressions compiled to classic BPF by libpcap.

Owns: the ctypes layer over the system's libpcap (Debian's libpcap0.8):
pcap_compile() on a dead Ethernet handle, which turns an expression into
the struct sock_filter program the workers run (xdpd/datapath/cbpf.h), and
pcap_offline_filter(), libpcap's own interpreter, which the tests hold the
workers' one to.  ctypes rather than a Python binding: the maintained ones
(python-libpcap, pcapy-ng) are C extensions to build against the same
library for the three calls used here, and libbpf is reached the same way
(kernel/libbpf.py).
Must not: open a device or capture anything (a dead handle compiles only).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import struct
import threading

DLT_EN10MB = 1                    # Ethernet (pcap/dlt.h)
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
MAX_SNAPLEN = 262144              # libpcap's MAXIMUM_SNAPLEN
# An expression longer than this is refused before libpcap sees it: a
# filter is a line an operator types, and libpcap's parser recurses.
MAX_EXPRESSION = 4096
INSN = struct.Struct("=HBBI")     # struct sock_filter / struct bpf_insn


class FilterError(ValueError):
    """An expression libpcap would not compile: its own message."""


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


class _PktHdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


_lib = None
# pcap_compile() was not thread-safe before libpcap 1.8 and its parser
# keeps state; one compile at a time, whatever the version
_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """libpcap, loaded once; OSError naming the package when it is missing."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise OSError(f"libpcap not found ({e}); install libpcap0.8") from None
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = (ctypes.c_void_p, ctypes.POINTER(_BpfProgram),
                                     ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32)
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
        lib.pcap_freecode.argtypes = (ctypes.POINTER(_BpfProgram),)
        lib.pcap_close.argtypes = (ctypes.c_void_p,)
        lib.pcap_offline_filter.restype = ctypes.c_int
        lib.pcap_offline_filter.argtypes = (ctypes.POINTER(_BpfProgram), ctypes.POINTER(_PktHdr),
                                            ctypes.c_char_p)
        _lib = lib
    return _lib


def compile_filter(expression: str, snaplen: int = MAX_SNAPLEN) -> bytes:
    """The expression as classic BPF for Ethernet frames (struct
    sock_filter array bytes), optimized as tcpdump does; FilterError with
    libpcap's message when it does not compile.  An empty expression
    takes every frame."""
    if len(expression) > MAX_EXPRESSION:
        raise FilterError(f"filter expression of {len(expression)} characters; at most "
                          f"{MAX_EXPRESSION}")
    if "\0" in expression:
        raise FilterError("filter expression holds a NUL character")
    lib = library()
    with _lock:
        handle = lib.pcap_open_dead(DLT_EN10MB, snaplen)
        if not handle:
            raise OSError("pcap_open_dead failed")
        try:
            prog = _BpfProgram()
            if lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), 1,
                                PCAP_NETMASK_UNKNOWN) != 0:
                raise FilterError(lib.pcap_geterr(handle).decode(errors="replace"))
            try:
                return b"".join(INSN.pack(i.code, i.jt, i.jf, i.k)
                                for i in prog.bf_insns[:prog.bf_len])
            finally:
                lib.pcap_freecode(ctypes.byref(prog))
        finally:
            lib.pcap_close(handle)


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) of each instruction of a program."""
    return [INSN.unpack_from(program, off) for off in range(0, len(program), INSN.size)]


def libpcap_filter(program: bytes, frame: bytes, wirelen: int | None = None) -> int:
    """What libpcap's own interpreter (pcap_offline_filter) returns for the
    program on a frame: 0, no match; else the snap length."""
    insns = (_BpfInsn * (len(program) // INSN.size))()
    for n, (code, jt, jf, k) in enumerate(instructions(program)):
        insns[n] = _BpfInsn(code, jt, jf, k)
    prog = _BpfProgram(len(insns), insns)
    hdr = _PktHdr(0, 0, len(frame), len(frame) if wirelen is None else wirelen)
    # bpf_filter()'s u_int, returned as an int by pcap_offline_filter()
    return library().pcap_offline_filter(ctypes.byref(prog), ctypes.byref(hdr),
                                         frame) & 0xFFFFFFFF
