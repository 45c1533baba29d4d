"""`xdpd check-config PATH`: validate a configuration against this host and
print what would run (workers, UMEM, steering, metrics).
"""
from __future__ import annotations

import sys

from xdpd import exitcodes
from xdpd.config.model import COPY_MAX_SEGS, L2_OVERHEAD, ConfigError, InterfaceConfig
from xdpd.config.plan import fragments, frame_use, interface_mtus, multi_buffer, plan_workers
from xdpd.config.schema import load_config
from xdpd.control.snapshot import describe_rule
from xdpd.control.steering import check_steering, describe_flow
from xdpd.datapath.umem import UmemGeometry
from xdpd.kernel.ethtool import Ethtool
from xdpd.kernel.netdev import Host


def format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def multi_buffer_use(config, mtus: dict[str, int], chains: bool) -> str:
    """umem.multi_buffer as it would be decided, and the RX and FILL rings
    in full-size packets of the largest MTU."""
    setting = f"umem.multi_buffer: {config.umem.multi_buffer}"
    if not chains:
        return f"multi-buffer: off ({setting}); one buffer per packet"
    frame, r = config.umem.frame_size, config.rings
    mtu = max(mtus.values(), default=0)
    n = fragments(mtu + L2_OVERHEAD, frame)
    return (f"multi-buffer: on ({setting}); a packet takes up to {COPY_MAX_SEGS} "
            f"descriptors in copy mode, {n} at MTU {mtu}: the rx ring ({r.rx}) holds "
            f"{r.rx // n} such packets, the fill ring ({r.fill}) buffers for {r.fill // n}")


def command(args) -> int:
    host = Host()
    try:
        config = load_config(args.path, host)
        if any(not i.steering.empty for i in config.interfaces):
            check_steering(config, Ethtool())
    except ConfigError as e:
        print(e, file=sys.stderr)
        return exitcodes.CONFIG
    plans = plan_workers(config, host)
    geo = UmemGeometry(len(plans), config.umem.frames_per_worker, config.umem.frame_size)
    mtus = interface_mtus(config, host)
    chains = multi_buffer(config.umem, mtus.values())
    print(f"{args.path}: OK")
    print(f"workers: {len(plans)}")
    for p in plans:
        print(f"  {p.name:<20} cpu {p.cpu:<3} {describe_rule(config, p.netdev)}")
    for iface in config.interfaces:
        if iface.fanout > 1:
            print(f"fanout {iface.name}: {iface.fanout} workers per queue "
                  f"({iface.fanout_spread}); member 0 has the queue's FILL and COMPLETION "
                  f"rings and its {config.umem.frames_per_worker} frames serve all "
                  f"{iface.fanout} RX rings")
        elif iface.fanout_spread != InterfaceConfig(name="").fanout_spread:
            print(f"fanout {iface.name}: 1 (fanout_spread {iface.fanout_spread} unused "
                  "without fanout)")
        if iface.pass_to_kernel:
            print(f"pass to kernel on {iface.name}: "
                  + "; ".join(m.describe() for m in iface.pass_to_kernel))
        try:
            print(f"frames {iface.name}: "
                  f"{frame_use(host.mtu(iface.name), config.umem.frame_size, chains)}")
        except OSError as e:
            print(f"frames {iface.name}: MTU unknown ({e.strerror or e})")
    r = config.rings
    ring_bytes = (r.rx + r.tx) * 16 + (r.fill + r.completion) * 8   # descriptors
    print(f"umem: {geo.frames} frames x {geo.frame_size} B = {geo.size / 2**20:.1f} MiB "
          f"(hugepages: {config.umem.hugepages}); control area "
          f"{geo.control_size() / 2**20:.1f} MiB; rings {ring_bytes / 2**10:.0f} KiB per socket")
    print(multi_buffer_use(config, mtus, chains))
    print("per-worker memory: logged at start (rss, unique); shared regions are mapped "
          "by every worker")
    for iface in config.interfaces:
        s = iface.steering
        if s.empty:
            continue
        what = []
        if s.channels is not None:
            what.append(f"{s.channels} channels")
        if s.rss_queues is not None:
            what.append("RSS over queues " + ",".join(map(str, s.rss_queues)))
        what += [describe_flow(rule) for rule in s.flows]
        print(f"steering {iface.name}: " + "; ".join(what))
    listen = config.metrics.listen
    print("metrics: " + (format_listen(listen) if listen else "disabled"))
    return exitcodes.OK
