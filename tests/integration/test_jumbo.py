"""MTU 9000 on every link of the lab, native XDP: descriptor chains.

The XDP program is multi-buffer aware (SEC("xdp.frags")), so it attaches in
native mode where veth refuses a program without frags ("Peer MTU is too
large to set XDP").  With umem.multi_buffer: auto the sockets are bound
with XDP_USE_SG and a 9000-byte packet crosses xdpd as a chain of 6
buffers; with multi_buffer: off the workers take one buffer per packet,
and a packet larger than a frame is dropped by the kernel at the socket
and counted in the socket's rx_dropped, nothing else breaks, and what fits
a frame goes through.  Real clients judge it: ping at both sizes."""
import contextlib
import shutil

import pytest
from integration_helpers import ROOT_ONLY, poll_until

pytestmark = [*ROOT_ONLY, pytest.mark.skipif(not shutil.which("ping"),
                                              reason="needs ping (iputils-ping)")]

MTU = 9000
GEN_IP, SINK_IP = "10.202.0.1", "10.202.0.2"


@contextlib.contextmanager
def jumbo(lab):
    """Every link of the lab at MTU, addressed end to end; 1500 and no
    addresses again after."""
    links = ((lab.gen_ns, lab.GEN_DEV), (lab.dut_ns, lab.IN_DEV),
             (lab.dut_ns, lab.OUT_DEV), (lab.sink_ns, lab.SINK_DEV))
    try:
        for ns, dev in links:
            lab.run(ns, "ip", "link", "set", dev, "mtu", str(MTU))
        lab.run(lab.gen_ns, "ip", "addr", "add", f"{GEN_IP}/24", "dev", lab.GEN_DEV)
        lab.run(lab.sink_ns, "ip", "addr", "add", f"{SINK_IP}/24", "dev", lab.SINK_DEV)
        yield
    finally:
        for ns, dev in ((lab.gen_ns, lab.GEN_DEV), (lab.sink_ns, lab.SINK_DEV)):
            lab.run(ns, "ip", "addr", "flush", "dev", dev, check=False)
            lab.run(ns, "ip", "neigh", "flush", "dev", dev, check=False)
        for ns, dev in links:
            lab.run(ns, "ip", "link", "set", dev, "mtu", "1500", check=False)


def config(lab, umem: str = "") -> str:
    return (umem + f"interfaces:\n  - name: {lab.IN_DEV}\n    xdp_mode: native\n"
            f"  - name: {lab.OUT_DEV}\n    xdp_mode: native\n"
            f"forward:\n  - from: {lab.IN_DEV}\n    to: {lab.OUT_DEV}\n"
            f"  - from: {lab.OUT_DEV}\n    to: {lab.IN_DEV}\n"
            'metrics:\n  listen: "127.0.0.1:9464"\n')


def ping(lab, size: int, count: int = 10):
    return lab.run(lab.gen_ns, "ping", "-c", str(count), "-i", "0.05", "-W", "2", "-q", "-M",
                   "do", "-s", str(size), SINK_IP, check=False).stdout


def test_native_at_mtu_9000_carries_full_size_packets_as_chains(lab, start_daemon):
    with jumbo(lab):
        d = start_daemon(config(lab))
        st = d.status()
        assert {i["name"]: i["xdp_mode"] for i in st["interfaces"]} == {
            lab.IN_DEV: "native", lab.OUT_DEV: "native"}
        assert st["umem"]["max_segs"] == 18
        assert "takes 6 buffers of 2048 B, one descriptor chain (multi-buffer)" in d.log()
        pids = d.worker_pids()
        for size in (56, 1472, 1800, 4000, MTU - 28):
            out = ping(lab, size)
            assert " 0% packet loss" in out, (size, out)
        m = d.scrape()
        # 10 requests and 10 replies of each size: 1, 1, 2, 3 and 6 buffers
        assert m.value("xdpd_rx_packets_total") >= 100
        assert m.value("xdpd_rx_fragments_total") >= 2 * 10 * (1 + 1 + 2 + 3 + 6)
        assert m.value("xdpd_dropped_packets_total") == 0
        assert m.value("xdpd_bad_descriptors_total") == 0
        assert m.value("xdpd_xsk_rx_dropped_packets_total") == 0
        assert d.worker_pids() == pids


def test_native_at_mtu_9000_without_chains_counts_what_does_not_fit(lab, start_daemon):
    with jumbo(lab):
        d = start_daemon(config(lab, "umem:\n  multi_buffer: 'off'\n"))
        st = d.status()
        assert {i["name"]: i["xdp_mode"] for i in st["interfaces"]} == {
            lab.IN_DEV: "native", lab.OUT_DEV: "native"}
        assert "MTU 9000: packets over 1774 B" in d.log()       # said at start, with the fix
        assert d.status()["umem"]["max_segs"] == 0
        pids = d.worker_pids()

        out = lab.run(lab.gen_ns, "ping", "-c", "20", "-i", "0.05", "-W", "2", "-q",
                      SINK_IP).stdout
        assert " 0% packet loss" in out, out

        def dropped():
            return d.scrape().value("xdpd_xsk_rx_dropped_packets_total")
        before = dropped()
        big = lab.run(lab.gen_ns, "ping", "-c", "5", "-i", "0.1", "-W", "1", "-q", "-M", "do",
                      "-s", str(MTU - 28), SINK_IP, check=False).stdout
        assert "5 packets transmitted, 0 received" in big, big
        # each 9000-byte echo request was dropped at in0's socket, and counted
        poll_until(lambda: dropped() - before >= 5, what="5 more xsk rx_dropped")
        m = d.scrape()
        assert m.value("xdpd_dropped_packets_total") == 0
        assert m.value("xdpd_bad_descriptors_total") == 0
        assert d.worker_pids() == pids                          # nobody crashed
