"""Steering: the exact ethtool requests xdpd sends (a fake kernel behind the
injectable send), the journal, undo at stop and after a crash."""
import errno
import ipaddress
import json
import logging
import os
import struct
from textwrap import dedent

import pytest

from xdpd.config.model import ConfigError, FlowRule
from xdpd.config.schema import parse_config
from xdpd.control import record as run_record
from xdpd.control.steering import Steering, check_steering, journal_path, read_journal, recover
from xdpd.kernel import ethtool
from xdpd.kernel.ethtool import Ethtool, FlowSpec

RXNFC = ethtool._RXNFC_HEAD.size          # where the flow spec starts in ethtool_rxnfc


class FakeNic:
    """The kernel's side of SIOCETHTOOL for some netdevs: answers in place,
    remembers every request as (ifname, command, bytes)."""

    def __init__(self, driver="mlx5_core", combined=(8, 4), rx_tx=None, indir=128,
                 ntuple=1024, driver_picks=False):
        self.driver = driver
        self.max_combined, self.combined = combined if combined else (0, 0)
        self.max_rx, self.rx = rx_tx if rx_tx else (0, 0)
        self.tx = self.rx
        self.indir = [i % 4 for i in range(indir)] if indir else None
        self.size = ntuple
        self.rules: dict[int, bytes] | None = {} if ntuple else None
        self.driver_picks = driver_picks
        self.requests = []

    def __call__(self, ifname, req: bytearray):
        cmd = struct.unpack_from("=I", req)[0]
        self.requests.append((ifname, ethtool.COMMAND_NAMES[cmd], bytes(req)))
        if ifname == "gone0":
            raise OSError(errno.ENODEV, "No such device")
        if cmd == ethtool.ETHTOOL_GDRVINFO:
            req[4:4 + len(self.driver)] = self.driver.encode()
        elif cmd == ethtool.ETHTOOL_GCHANNELS:
            ethtool._CHANNELS.pack_into(req, 0, cmd, self.max_rx, self.max_rx, 0,
                                        self.max_combined, self.rx, self.tx, 0, self.combined)
        elif cmd == ethtool.ETHTOOL_SCHANNELS:
            rx, tx, _, combined = ethtool._CHANNELS.unpack(req)[5:]
            if combined > self.max_combined or rx > self.max_rx:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.rx, self.tx, self.combined = rx, tx, combined
        elif cmd in (ethtool.ETHTOOL_GRXFHINDIR, ethtool.ETHTOOL_SRXFHINDIR):
            if self.indir is None:
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            size = struct.unpack_from("=I", req, 4)[0]
            if cmd == ethtool.ETHTOOL_SRXFHINDIR:
                self.indir = list(struct.unpack_from(f"={size}I", req, 8))
            elif size == 0:
                struct.pack_into("=I", req, 4, len(self.indir))
            else:
                struct.pack_into(f"={size}I", req, 8, *self.indir)
        elif cmd in (ethtool.ETHTOOL_GRXCLSRLCNT, ethtool.ETHTOOL_GRXCLSRLALL,
                     ethtool.ETHTOOL_GRXCLSRULE, ethtool.ETHTOOL_SRXCLSRLINS,
                     ethtool.ETHTOOL_SRXCLSRLDEL):
            self._ntuple(cmd, req)

    def _ntuple(self, cmd, req):
        if self.rules is None:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        loc_at = RXNFC + ethtool._FLOW_SPEC.size - 8
        location = struct.unpack_from("=I", req, loc_at)[0]
        if cmd == ethtool.ETHTOOL_GRXCLSRLCNT:
            special = ethtool.RX_CLS_LOC_SPECIAL if self.driver_picks else 0
            struct.pack_into("=Q", req, 8, self.size | special)
            struct.pack_into("=I", req, ethtool._RULE_CNT_OFFSET, len(self.rules))
        elif cmd == ethtool.ETHTOOL_GRXCLSRLALL:
            locs = sorted(self.rules)
            struct.pack_into(f"=I{len(locs)}I", req, ethtool._RULE_CNT_OFFSET, len(locs), *locs)
        elif cmd == ethtool.ETHTOOL_GRXCLSRULE:
            if location not in self.rules:
                raise OSError(errno.ENOENT, "No such file or directory")
            req[RXNFC:RXNFC + ethtool._FLOW_SPEC.size] = self.rules[location]
        elif cmd == ethtool.ETHTOOL_SRXCLSRLINS:
            if location == ethtool.RX_CLS_LOC_ANY:
                location = self.size - 1 - len(self.rules)     # as mlx5 does: from the top
                struct.pack_into("=I", req, loc_at, location)
            self.rules[location] = bytes(req[RXNFC:RXNFC + ethtool._FLOW_SPEC.size])
        elif cmd == ethtool.ETHTOOL_SRXCLSRLDEL:
            del self.rules[location]


def sent(nic, command):
    return [r[2] for r in nic.requests if r[1] == command]


# --- the exact requests -----------------------------------------------------

def test_ntuple_insert_request_is_the_flow_spec_of_linux_ethtool_h():
    nic = FakeNic()
    spec = FlowSpec.of("udp4", 3, dst_ip="192.0.2.7", dst_port=4789)
    assert Ethtool(nic).insert_rule("eth0", spec, 5) == 5
    [req] = sent(nic, "ETHTOOL_SRXCLSRLINS")
    assert len(req) == 192                                   # sizeof(struct ethtool_rxnfc)
    cmd, flow_type, data = struct.unpack_from("=IIQ", req)
    assert (cmd, flow_type, data) == (0x32, 0, 0)
    fs = req[16:16 + 168]
    assert struct.unpack_from("=I", fs)[0] == ethtool.UDP_V4_FLOW
    # h_u.udp_ip4_spec: ip4src, ip4dst, psrc, pdst (network order), tos
    assert fs[4:17] == bytes(4) + ipaddress.ip_address("192.0.2.7").packed + \
        b"\x00\x00" + struct.pack("!H", 4789) + b"\0"
    # m_u: a set bit is compared: dst address and dst port only
    assert fs[76:89] == bytes(4) + b"\xff" * 4 + b"\x00\x00\xff\xff\x00"
    assert fs[56:76] == bytes(20) and fs[128:148] == bytes(20)   # no flow_ext
    assert struct.unpack_from("=QI", fs, 152) == (3, 5)          # ring_cookie, location


def test_ntuple_ipv6_tcp_ports():
    spec = FlowSpec.of("tcp6", 1, src_ip="2001:db8::1", src_port=22)
    fs = spec.pack()
    assert struct.unpack_from("=I", fs)[0] == ethtool.TCP_V6_FLOW
    assert fs[4:20] == ipaddress.ip_address("2001:db8::1").packed
    assert fs[36:40] == struct.pack("!HH", 22, 0)
    assert fs[76:92] == b"\xff" * 16 and fs[92:108] == bytes(16)
    assert fs[108:112] == b"\xff\xff\x00\x00"
    assert struct.unpack_from("=QI", fs, 152) == (1, ethtool.RX_CLS_LOC_ANY)


def test_rss_requests_ask_the_size_then_set_the_table():
    nic = FakeNic(indir=8)
    e = Ethtool(nic)
    assert e.get_indirection("eth0") == [0, 1, 2, 3, 0, 1, 2, 3]
    e.set_indirection("eth0", [2, 5] * 4)
    get0, get8 = sent(nic, "ETHTOOL_GRXFHINDIR")
    assert get0 == struct.pack("=II", 0x38, 0)
    assert get8[:8] == struct.pack("=II", 0x38, 8) and len(get8) == 8 + 32
    assert sent(nic, "ETHTOOL_SRXFHINDIR") == [struct.pack("=10I", 0x39, 8, *[2, 5] * 4)]


def test_errors_name_the_command_the_netdev_and_the_driver():
    e = Ethtool(FakeNic(driver="veth", ntuple=0))
    with pytest.raises(ethtool.EthtoolError) as info:
        e.rule_count("in0")
    assert info.value.errno == errno.EOPNOTSUPP
    assert str(info.value) == ("ETHTOOL_GRXCLSRLCNT on in0 (driver veth) failed: EOPNOTSUPP "
                               "(Operation not supported); the driver has no ntuple filters "
                               "(see 'ethtool -k in0 | grep ntuple')")


# --- check time -----------------------------------------------------------------

def steer_config(steering: str, queues="all", name="in0"):
    text = f"interfaces:\n  - name: {name}\n    queues: {queues}\n    steering:\n" + \
        "".join("      " + line + "\n" for line in dedent(steering).strip().splitlines()) + \
        "forward: []\ncontrol:\n  socket: /tmp/xdpd-steering-test/xdpd.sock\n"
    return parse_config(text, "xdpd.yaml")


def test_check_names_interface_driver_and_feature():
    config = steer_config("""\
        channels: 8
        rss_queues: [0, 1]
        flows:
          - {type: udp4, dst_port: 53, queue: 1}
        """)
    nic = FakeNic(driver="veth", combined=None, rx_tx=(4, 4), indir=0, ntuple=0)
    with pytest.raises(ConfigError) as info:
        check_steering(config, Ethtool(nic))
    assert info.value.errors == [
        "xdpd.yaml: interfaces[0].steering.channels: 8 but in0 (driver veth) has at most "
        "4 rx channels (see 'ethtool -l in0'); use 4 or fewer",
        "xdpd.yaml: interfaces[0].steering.rss_queues: in0 (driver veth) has no RSS "
        "indirection table: ETHTOOL_GRXFHINDIR answered EOPNOTSUPP; remove rss_queues or use "
        "a NIC that has them",
        "xdpd.yaml: interfaces[0].steering.flows: in0 (driver veth) has no ntuple filters: "
        "ETHTOOL_GRXCLSRLCNT answered EOPNOTSUPP; remove flows or use a NIC that has them"]


def test_check_passes_what_the_driver_can_do():
    config = steer_config("channels: 8\nrss_queues: [0, 1]\nflows:\n"
                          "  - {type: udp4, dst_port: 53, queue: 1}")
    check_steering(config, Ethtool(FakeNic()))


# --- apply, journal, undo -----------------------------------------------------------

OWNER = run_record.Owner(4242, 1000, "boot-a")


def applied(tmp_path, nic, steering_yaml):
    config = steer_config(steering_yaml)
    st = Steering(Ethtool(nic), str(tmp_path / "xdpd.steering.json"), OWNER)
    st.apply(config.interfaces[0])
    return st, config


FULL = """\
    channels: 2
    rss_queues: [1]
    flows:
      - {type: udp4, dst_port: 53, queue: 0}
      - {type: tcp4, src_ip: 10.0.0.1, queue: 1}
    """


def test_apply_records_what_it_replaced_and_stop_restores_it(tmp_path):
    nic = FakeNic(indir=4, driver_picks=True)
    st, _ = applied(tmp_path, nic, FULL)
    assert nic.combined == 2 and nic.indir == [1, 1, 1, 1]
    assert sorted(nic.rules) == [1022, 1023]
    owner, [entry] = read_journal(st.path)
    assert owner == OWNER
    assert entry.channels == {"before": [0, 0, 0, 4], "set": [0, 0, 0, 2]}
    assert entry.rss == {"before": [0, 1, 2, 3], "set": [1, 1, 1, 1]}
    assert [(r["location"], r["flow"]["type"]) for r in entry.rules] == \
        [(1023, "udp4"), (1022, "tcp4")]
    st.undo_all()
    assert nic.combined == 4 and nic.indir == [0, 1, 2, 3] and nic.rules == {}
    assert not (tmp_path / "xdpd.steering.json").exists()
    # undone in reverse: rules (newest first), RSS, channels
    dels = [struct.unpack_from("=I", r, RXNFC + 160)[0] for r in sent(nic, "ETHTOOL_SRXCLSRLDEL")]
    assert dels == [1022, 1023]
    setters = [r[1] for r in nic.requests if r[1] in ("ETHTOOL_SRXCLSRLDEL", "ETHTOOL_SRXFHINDIR",
                                                     "ETHTOOL_SCHANNELS")]
    assert setters[-4:] == ["ETHTOOL_SRXCLSRLDEL", "ETHTOOL_SRXCLSRLDEL", "ETHTOOL_SRXFHINDIR",
                            "ETHTOOL_SCHANNELS"]


def test_without_driver_picked_locations_the_lowest_free_one_is_used(tmp_path):
    nic = FakeNic(ntuple=4)
    nic.rules[0] = FlowSpec.of("udp4", 0, dst_port=1).pack(0)    # the operator's rule
    st, _ = applied(tmp_path, nic, "flows:\n  - {type: udp4, dst_port: 53, queue: 0}")
    assert sorted(nic.rules) == [0, 1]
    st.undo_all()
    assert sorted(nic.rules) == [0]                              # theirs stays


def test_rx_tx_channels_where_the_driver_has_no_combined(tmp_path):
    nic = FakeNic(driver="veth", combined=None, rx_tx=(4, 4))
    st, _ = applied(tmp_path, nic, "channels: 2")
    assert (nic.rx, nic.tx) == (2, 2)
    st.undo_all()
    assert (nic.rx, nic.tx) == (4, 4)


def test_nothing_to_change_writes_no_journal(tmp_path):
    nic = FakeNic(combined=(8, 2))
    st, _ = applied(tmp_path, nic, "channels: 2")
    assert not sent(nic, "ETHTOOL_SCHANNELS")
    assert not (tmp_path / "xdpd.steering.json").exists()


def crashed(tmp_path, nic):
    """What a killed xdpd leaves: the changes and the journal."""
    st, _ = applied(tmp_path, nic, FULL)
    return st.path


def test_after_a_crash_the_journal_is_undone(tmp_path, caplog):
    nic = FakeNic(indir=4, driver_picks=True)
    path = crashed(tmp_path, nic)
    caplog.set_level(logging.INFO)
    recover(path, Ethtool(nic), owner_alive=lambda o: False, current_boot=lambda: "boot-a")
    assert nic.combined == 4 and nic.indir == [0, 1, 2, 3] and nic.rules == {}
    assert not (tmp_path / "xdpd.steering.json").exists()
    assert ("in0: ntuple rule udp4 dst_port 53 -> queue 0 at location 1023 removed "
            "(added by xdpd pid 4242 that died)") in caplog.messages


def test_after_a_crash_a_rule_xdpd_did_not_add_is_left_alone(tmp_path, caplog):
    nic = FakeNic(indir=4, driver_picks=True)
    path = crashed(tmp_path, nic)
    # an operator replaced xdpd's rule at 1023, and set channels of their own
    nic.rules[1023] = FlowSpec.of("tcp4", 0, dst_port=80).pack(1023)
    nic.combined = 3
    recover(path, Ethtool(nic), owner_alive=lambda o: False, current_boot=lambda: "boot-a")
    assert sorted(nic.rules) == [1023] and nic.combined == 3
    assert nic.indir == [0, 1, 2, 3]
    assert ("in0: ntuple rule udp4 dst_port 53 -> queue 0 at location 1023 (added by xdpd "
            "pid 4242 that died): not removed, another rule is there now") in caplog.messages
    assert ("in0: channel counts changed since xdpd pid 4242 that died set them; left as "
            "they are") in caplog.messages


def test_a_journal_of_a_running_xdpd_is_refused(tmp_path):
    from xdpd.control.steering import SteeringError
    nic = FakeNic()
    path = crashed(tmp_path, nic)
    with pytest.raises(SteeringError):
        recover(path, Ethtool(nic), owner_alive=lambda o: True)
    assert (tmp_path / "xdpd.steering.json").exists()


def test_a_journal_from_before_a_reboot_is_dropped(tmp_path):
    nic = FakeNic()
    path = crashed(tmp_path, nic)
    before = len(nic.requests)
    recover(path, Ethtool(nic), owner_alive=lambda o: False, current_boot=lambda: "boot-b")
    assert len(nic.requests) == before
    assert not (tmp_path / "xdpd.steering.json").exists()


def test_reload_changes_only_what_differs(tmp_path):
    nic = FakeNic(indir=4, driver_picks=True)
    st, old = applied(tmp_path, nic, FULL)
    new = steer_config("""\
        channels: 2
        flows:
          - {type: tcp4, src_ip: 10.0.0.1, queue: 1}
          - {type: udp6, dst_port: 53, queue: 0}
        """)
    before = len(nic.requests)
    st.update(old.interfaces[0], new.interfaces[0])
    done = [r[1] for r in nic.requests[before:] if r[1].startswith("ETHTOOL_S")]
    assert done == ["ETHTOOL_SRXCLSRLDEL", "ETHTOOL_SRXFHINDIR", "ETHTOOL_SRXCLSRLINS"]
    assert nic.indir == [0, 1, 2, 3] and nic.combined == 2
    _, [entry] = read_journal(st.path)
    assert [FlowRule(**r["flow"]) for r in entry.rules] == list(new.interfaces[0].steering.flows)
    assert entry.rss is None


def test_journal_path_is_beside_the_socket():
    assert journal_path("/run/xdpd/xdpd.sock") == "/run/xdpd/xdpd.steering.json"


def test_channel_requests():
    nic = FakeNic(driver="veth", combined=None, rx_tx=(4, 4))
    e = Ethtool(nic)
    assert e.get_channels("in0").rx_queues == 4
    e.set_channels("in0", 2, 2, 0, 0)
    assert sent(nic, "ETHTOOL_GCHANNELS") == [struct.pack("=9I", 0x3C, *[0] * 8)]
    assert sent(nic, "ETHTOOL_SCHANNELS") == [struct.pack("=9I", 0x3D, 0, 0, 0, 0, 2, 2, 0, 0)]


def test_rule_locations_asks_with_the_count_and_table_size():
    nic = FakeNic(ntuple=16)
    nic.rules = {3: bytes(168), 9: bytes(168)}
    assert Ethtool(nic).rule_locations("eth0") == [3, 9]
    [req] = sent(nic, "ETHTOOL_GRXCLSRLALL")
    assert len(req) == 192 + 2 * 4
    assert struct.unpack_from("=IIQ", req) == (0x30, 0, 16)
    assert struct.unpack_from("=I", req, 184)[0] == 2                # rule_cnt


FOREIGN_JOURNALS = {
    "not JSON": "{oops",
    "another format": json.dumps({"format": "something-else/1"}),
    "pid a string": {"pid": "4242"},
    "pid negative": {"pid": -1},
    "boot id a number": {"boot_id": 7},
    "netdevs an object": {"netdevs": {"in0": {}}},
    "a netdev a list": {"netdevs": [["in0"]]},
    "rules an object": {"netdevs": [{"name": "in0", "rules": {"a": 1}}]},
    "channels a list": {"netdevs": [{"name": "in0", "channels": [1, 2]}]},
    "a rule without location": {"netdevs": [{"name": "in0", "rules": [{"flow": {}}]}]},
}


@pytest.mark.parametrize("case", sorted(FOREIGN_JOURNALS))
def test_a_corrupt_or_foreign_journal_is_moved_aside_with_a_message(tmp_path, caplog, case):
    nic = FakeNic(indir=4, driver_picks=True)
    path = crashed(tmp_path, nic)
    with open(path) as f:
        good = json.load(f)
    bad = FOREIGN_JOURNALS[case]
    text = bad if isinstance(bad, str) else json.dumps({**good, **bad})
    with open(path, "w") as f:
        f.write(text)
    before = len(nic.requests)
    with caplog.at_level(logging.WARNING):
        recover(path, Ethtool(nic), owner_alive=lambda o: False, current_boot=lambda: "boot-a")
    assert len(nic.requests) == before                  # nothing undone on its word
    assert not os.path.exists(path)
    with open(path + ".invalid") as f:
        assert f.read() == text                          # kept for the operator
    assert any("not an xdpd steering journal" in m and "moved to" in m and
               "ethtool" in m for m in caplog.messages), caplog.messages
