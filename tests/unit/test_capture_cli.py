"""`xdpd capture`'s own parts: its command line, its one-line decode, and
what it says when the daemon refuses."""
import socket
import struct

import pytest

from xdpd import exitcodes
from xdpd.cli import build_parser, main
from xdpd.cli.capture import _refused, _target, describe, summary
from xdpd.control.server import ControlError
from xdpd.datapath.capture import Record
from xdpd.lab.frames import udp4

A, B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def test_the_target_is_an_interface_and_maybe_a_queue():
    assert _target("in0") == ("in0", None)
    assert _target("in0/3") == ("in0", 3) == _target("in0/q3")
    with pytest.raises(ValueError, match="IFACE or IFACE/QUEUE"):
        _target("in0/x")


def test_filter_words_may_follow_options(monkeypatch):
    seen = {}
    monkeypatch.setattr("xdpd.cli.capture.command", lambda args: seen.update(vars(args)) or 0)
    assert main(["capture", "in0", "--point", "all", "udp", "and", "port", "53"]) == 0
    assert seen["filter"] == ["udp", "and", "port", "53"] and seen["point"] == "all"
    with pytest.raises(SystemExit):
        main(["capture", "in0", "udp", "--no-such-option"])
    args = build_parser().parse_args(["capture", "in0/1", "-c", "5", "-s", "128", "-w", "-"])
    assert (args.target, args.count, args.snaplen, args.write) == ("in0/1", 5, 128, "-")


def test_one_line_per_packet():
    f = udp4(A, B, socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"), 1024, 53, b"x")
    assert summary(f) == ("02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 "
                          "10.0.0.1.1024 > 10.0.0.2.53: UDP")
    tagged = f[:12] + struct.pack("!HH", 0x8100, 100) + f[12:]
    assert " vlan 100 IPv4 " in summary(tagged)
    assert summary(f[:10]) == "runt"
    assert summary(B + A + b"\x88\xb5" + bytes(46)).endswith("ethertype 0x88b5")
    r = Record("drop", "rule", 2, len(f), 1, 0, 1_796_000_000_000_000_000, f)
    line = describe(r, {"0": "in0"})
    assert " in0/q1 drop " in line and line.endswith(f"length {len(f)} dropped: rule (rule 2)")


def test_what_it_says_when_refused(capsys):
    assert _refused(ControlError("filter: syntax error", {"refused": "filter"})) == 2
    assert _refused(ControlError("snaplen 0: 1..262144", {"refused": "input"})) == \
        exitcodes.USAGE
    assert _refused(ControlError("/run/xdpd/xdpd.sock: no such socket")) == \
        exitcodes.UNAVAILABLE
    assert _refused(ControlError("unknown command 'capture_start'; known: status, "
                                 "reload")) == exitcodes.UNAVAILABLE
    err = capsys.readouterr().err
    assert "xdpd capture: filter: syntax error" in err
    assert "this xdpd has no capture (an older version)" in err
