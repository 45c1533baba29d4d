"""The limits Python enforces are the ones the C and BPF code were built
with: read from the headers themselves, so that changing one side alone
fails here instead of in a packet path (a table row or rule the fast path
never reads, a queue the XDP program has no slot for)."""
import pathlib
import re

import pytest

from xdpd.config import model as config
from xdpd.control import table
from xdpd.kernel import xdp_program

ROOT = pathlib.Path(__file__).resolve().parents[2]


def defines(path: str) -> dict[str, int]:
    text = (ROOT / path).read_text()
    found = {m[1]: int(m[2], 0) for m in
             re.finditer(r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)}
    found.update({m[1]: 1 << int(m[2]) for m in       # flags: (1U << n)
                  re.finditer(r"^#define\s+(\w+)\s+\(1U?\s*<<\s*(\d+)\)", text, re.M)})
    return found


FASTPATH = defines("xdpd/datapath/fastpath.h")
PROGRAM = defines("bpf/rr_redirect.h")

PAIRS = [
    ("config.MAX_NETDEVS", config.MAX_NETDEVS, FASTPATH, "FP_MAX_NETDEVS"),
    ("config.MAX_FORWARD_RULES", config.MAX_FORWARD_RULES, FASTPATH, "FP_MAX_RULES"),
    ("config.MAX_FANOUT", config.MAX_FANOUT, FASTPATH, "FP_MAX_FANOUT"),
    ("config.MAX_FANOUT", config.MAX_FANOUT, PROGRAM, "XDPD_MAX_FANOUT"),
    ("config.MAX_WORKERS", config.MAX_WORKERS, FASTPATH, "FP_MAX_WORKERS"),
    ("table.MAX_DIRECT", table.MAX_DIRECT, FASTPATH, "FP_MAX_DIRECT"),
    ("config.MAX_PASS_RULES", config.MAX_PASS_RULES, PROGRAM, "XDPD_MAX_PASS_RULES"),
    ("config.MAX_CHANNELS", config.MAX_CHANNELS, PROGRAM, "XDPD_MAX_QUEUES"),
    ("xdp_program.XDPD_MAX_QUEUES", xdp_program.XDPD_MAX_QUEUES, PROGRAM, "XDPD_MAX_QUEUES"),
    ("xdp_program.XDPD_MAX_FANOUT", xdp_program.XDPD_MAX_FANOUT, PROGRAM, "XDPD_MAX_FANOUT"),
    ("xdp_program.XDPD_MAX_PASS_RULES", xdp_program.XDPD_MAX_PASS_RULES, PROGRAM, "XDPD_MAX_PASS_RULES"),
    ("xdp_program.XDPD_SPREAD_FLOW_HASH", xdp_program.XDPD_SPREAD_FLOW_HASH, PROGRAM,
     "XDPD_SPREAD_FLOW_HASH"),
    ("xdp_program.XDPD_SPREAD_ROUND_ROBIN", xdp_program.XDPD_SPREAD_ROUND_ROBIN, PROGRAM,
     "XDPD_SPREAD_ROUND_ROBIN"),
]


@pytest.mark.parametrize("what,value,header,name", PAIRS, ids=[p[0] + "=" + p[3] for p in PAIRS])
def test_python_limit_equals_the_header(what, value, header, name):
    assert name in header, f"{name} is no longer #defined as a number"
    assert value == header[name], f"{what} is {value}, {name} is {header[name]}"


def test_match_flags_equal_the_program():
    names = [n for n in PROGRAM if n.startswith("XDPD_MATCH_")]
    assert names
    for n in names:
        assert getattr(xdp_program, n) == PROGRAM[n], n


def test_the_extension_reports_the_header():
    from xdpd.datapath import _fastpath
    assert _fastpath.MAX_NETDEVS == FASTPATH["FP_MAX_NETDEVS"]
    assert _fastpath.MAX_WORKERS == FASTPATH["FP_MAX_WORKERS"]


def test_the_reader_finds_what_it_compares():
    assert {"FP_MAX_NETDEVS", "FP_MAX_RULES", "FP_MAX_FANOUT", "FP_MAX_WORKERS"} <= set(FASTPATH)
    assert FASTPATH["FP_MAX_WORKERS"] == 256
