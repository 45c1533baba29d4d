"""Helpers shared by the integration tests."""
import json
import os
import shutil
import subprocess
import time

import pytest

ROOT_ONLY = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (XDP, AF_XDP, network namespaces)"),
    pytest.mark.skipif(not (shutil.which("ip") and shutil.which("nsenter")
                            and shutil.which("ethtool")),
                       reason="needs iproute2, nsenter and ethtool"),
]


def xdp_attached(lab, ns: str, dev: str) -> bool:
    info = json.loads(lab.run(ns, "ip", "-j", "-d", "link", "show", dev).stdout)[0]
    return "xdp" in info


def link_counters(lab, ns: str, dev: str) -> dict:
    """The device's own counters, {"rx": {"packets", "bytes", "dropped", ...},
    "tx": {...}} (for veth: every frame it took in, whatever the stack did
    with it afterwards)."""
    out = lab.run(ns, "ip", "-s", "-j", "link", "show", dev).stdout
    return json.loads(out)[0]["stats64"]


def link_drops(lab, ns: str, dev: str) -> dict:
    """The kernel's drop counters of one device: where a frame went that no
    counter of xdpd or the sink saw."""
    c = link_counters(lab, ns, dev)
    return {f"{way}_dropped": c[way]["dropped"] for way in ("rx", "tx")}


def processes_in_netns(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def poll_until(predicate, timeout: float = 10.0, what: str = "condition", every: float = 0.02):
    """Call predicate until it returns something true (returned) or the
    deadline passes (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(every)


def start_live_generator(lab, rate: int, cpu: int = 0, flows: int = 1) -> subprocess.Popen:
    """The BPF live-frames generator from gen0, paced at `rate` pps until
    stop_live_generator(); from CPU n the frames land on in0's rx queue n."""
    import sys

    from xdpd.lab.traffic import child_env
    cmd = [sys.executable, "-m", "xdpd.lab.xdp", "gen", "--ifname", lab.GEN_DEV,
           "--dst-mac", lab.MACS[lab.IN_DEV], "--src-mac", lab.MACS[lab.GEN_DEV],
           "--rate", str(rate), "--seconds", "600", "--cpu", str(cpu), "--flows", str(flows)]
    return lab.popen(lab.gen_ns, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     env=child_env())


def ready_to_kill(d, name: str, timeout: float = 20.0) -> dict:
    """Worker `name` once it may be killed as a steady-state worker: running
    for over a second (a death sooner counts as a start-up failure and backs
    off) with its standby started and waiting for "go" (a standby still
    starting up would make the replacement wait for its interpreter)."""
    def ready():
        w = {x["name"]: x for x in d.status()["workers"]}[name]
        return (w["state"] == "running" and w["standby_ready"] and
                w["uptime_seconds"] > 1.0 and w)
    return poll_until(ready, timeout=timeout, what=f"{name} running with a ready standby",
                      every=0.05)


def stop_live_generator(proc: subprocess.Popen) -> int:
    """SIGTERM; the generator prints what it sent and exits. Returns that."""
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err
    return json.loads(out.decode().strip().splitlines()[-1])["sent"]


def listening(lab, ns: str, ip: str, port: int) -> bool:
    """A TCP server in ns listens on ip:port."""
    return f"{ip}:{port} " in lab.run(ns, "ss", "-ltnH").stdout


def run_iperf3(lab, server_ip: str, *args: str, port: int = 5201) -> dict:
    """iperf3 from the generator's namespace to a one-shot server on
    server_ip in the sink's: the client's JSON report."""
    server = lab.popen(lab.sink_ns, ["iperf3", "-s", "-1", "-B", server_ip, "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll_until(lambda: listening(lab, lab.sink_ns, server_ip, port),
                   what="iperf3 listening")
        r = lab.run(lab.gen_ns, "iperf3", "-c", server_ip, "-p", str(port), "-J",
                    "--connect-timeout", "5000", *args, check=False, timeout=60)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr)
        return json.loads(r.stdout)
    finally:
        server.kill()
        server.wait(10)
