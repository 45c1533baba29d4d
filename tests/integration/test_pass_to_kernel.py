"""pass_to_kernel in the lab: ARP and ICMP to in0's own address stay with the
kernel (it answers the generator's echo requests) while UDP test traffic on
the same, fully owned queues is forwarded by xdpd; a reload that removes the
rules hands those packets to xdpd without reattaching the XDP program."""
import json
import subprocess
import sys

from integration_helpers import ROOT_ONLY

from xdpd.lab.daemon import forward_config
from xdpd.lab.traffic import SinkProcess, child_env, send_in_ns

pytestmark = ROOT_ONLY

GEN_ADDR, DUT_ADDR = "10.99.0.1", "10.99.0.2"
RULES = "    pass_to_kernel: [{ethertype: arp}, {ip_proto: icmp}]\n"

# Echo requests to DST from this netns through a raw socket (the lab has no
# ping binary to rely on); the kernel resolves the address with ARP first.
# Prints the number of echo replies that came back within the deadline.
ECHO = r"""
import os, select, socket, struct, sys, time
dst, count, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
ident = os.getpid() & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for seq in range(count):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"xdpd-pass-test!!"
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    s.sendto(body, (dst, 0))
replies = set()
deadline = time.monotonic() + wait
while len(replies) < count:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        break
    pkt = s.recv(2048)
    icmp = pkt[(pkt[0] & 0xf) * 4:]
    typ, _, _, rid, seq = struct.unpack("!BBHHH", icmp[:8])
    if typ == 0 and rid == ident:
        replies.add(seq)
print(len(replies))
"""


def echo(lab, count: int, wait: float) -> int:
    """Echo replies to `count` requests from gen0 to in0's address."""
    out = subprocess.run(lab.nsenter(lab.gen_ns) + [sys.executable, "-c", ECHO, DUT_ADDR,
                         str(count), str(wait)], capture_output=True, text=True,
                         timeout=wait + 30, env=child_env())
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def prog_id(lab, ns: str, dev: str) -> int:
    info = json.loads(lab.run(ns, "ip", "-j", "-d", "link", "show", dev).stdout)[0]
    return info["xdp"]["prog"]["id"]


def test_check_config_lists_the_rules(lab, tmp_path):
    path = tmp_path / "xdpd.yaml"
    owned = f"  - name: {lab.IN_DEV}\n    queues: all\n"
    path.write_text(forward_config(lab).replace(owned, owned + RULES, 1))
    out = subprocess.run(lab.nsenter(lab.dut_ns) + [sys.executable, "-m", "xdpd",
                         "check-config", str(path)], capture_output=True, text=True,
                         env=child_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"pass to kernel on {lab.IN_DEV}: arp; icmp\n" in out.stdout
    assert f"pass to kernel on {lab.OUT_DEV}" not in out.stdout


def test_arp_and_icmp_stay_with_the_kernel_until_a_reload_removes_the_rule(lab, start_daemon):
    lab.run(lab.gen_ns, "ip", "addr", "add", f"{GEN_ADDR}/24", "dev", lab.GEN_DEV)
    lab.run(lab.dut_ns, "ip", "addr", "add", f"{DUT_ADDR}/24", "dev", lab.IN_DEV)
    try:
        plain = forward_config(lab)
        owned = f"  - name: {lab.IN_DEV}\n    queues: all\n"
        assert owned in plain
        daemon = start_daemon(plain.replace(owned, owned + RULES, 1))
        status = {i["name"]: i for i in daemon.status()["interfaces"]}
        assert status[lab.IN_DEV]["pass_to_kernel"] == ["arp", "icmp"]
        assert status[lab.OUT_DEV]["pass_to_kernel"] == []
        text = subprocess.run([sys.executable, "-m", "xdpd", "status", "--socket",
                               daemon.socket_path], capture_output=True, text=True,
                              env=child_env(), timeout=30)
        assert text.returncode == 0, text.stderr
        assert "pass to kernel: arp\n" in text.stdout and "pass to kernel: icmp\n" in text.stdout
        attached = prog_id(lab, lab.dut_ns, lab.IN_DEV)

        # the kernel answers ARP and ICMP on in0: every echo comes back
        assert echo(lab, count=5, wait=5.0) == 5
        n = 4000
        with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=91, expect=n, idle=2.0) as sink:
            send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV], count=n,
                       flows=64, tag=91)
            assert sink.result(timeout=30)["received"] == n
        m = daemon.scrape()
        kept = m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, verdict="pass_rule")
        assert kept >= 6, m.text             # five echo requests and at least one ARP frame
        assert m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, verdict="redirected") == n
        assert m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, verdict="passed") == 0
        assert m.value("xdpd_rx_packets_total", netdev=lab.IN_DEV) == n

        # without the rules the echo requests go to xdpd (forwarded to the sink side)
        answer = daemon.reload(plain)
        assert f"{lab.IN_DEV}: pass_to_kernel: none" in answer["changes"], answer
        assert prog_id(lab, lab.dut_ns, lab.IN_DEV) == attached
        assert daemon.status()["interfaces"][0]["pass_to_kernel"] == []
        assert echo(lab, count=3, wait=1.5) == 0
        m = daemon.wait_for(lambda m: m.value("xdpd_rx_packets_total", netdev=lab.IN_DEV)
                            >= n + 3)
        assert m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, verdict="pass_rule") == kept
        assert m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV,
                       verdict="redirected") >= n + 3
    finally:
        lab.run(lab.dut_ns, "ip", "addr", "flush", "dev", lab.IN_DEV, check=False)
        lab.run(lab.gen_ns, "ip", "addr", "flush", "dev", lab.GEN_DEV, check=False)
