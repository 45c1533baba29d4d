"""What a configuration means on this host: checks against its netdevs,
queues and CPUs, and the plan of workers.

Owns: check_host(), plan_workers(), format_cpulist(), and napi_placement()
(a planned worker on its queue's IRQ CPU: the supervisor logs it at start,
`xdpd doctor` reports it).
Must not: import the kernel-facing modules; the host arrives as a HostFacts
object (xdpd.kernel.netdev.Host in the daemon, a fake in tests).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: importing the kernel-facing module is not needed here
    from xdpd.kernel.netdev import HostFacts

from xdpd.config.model import (COPY_MAX_SEGS, FRAME_SIZES, L2_OVERHEAD, MAX_WORKERS,
                               XDP_HEADROOM, Config, InterfaceConfig, WorkerPlan, worker_name)
from xdpd.config.values import _Errors, _owned_refs, _queue_text


def check_host(config: Config, host: HostFacts) -> None:
    """Raise ConfigError listing every netdev, queue and CPU this host lacks."""
    errs = _Errors(config.source)
    for i, iface in enumerate(config.interfaces):
        _check_netdev(errs, f"interfaces[{i}]", iface, host)
    if config.workers.cpus != "auto":
        online = host.online_cpus()
        for i, cpu in enumerate(config.workers.cpus):
            if cpu not in online:
                errs.at(f"workers.cpus[{i}]",
                        f"CPU {cpu} is not online (online: {format_cpulist(online)})")
    _check_worker_count(errs, config, host)
    errs.raise_if_any()


def plan_workers(config: Config, host: HostFacts) -> tuple[WorkerPlan, ...]:
    """One worker per owned (netdev, queue, fanout member), pinned to a CPU
    of workers.cpus (all online CPUs for auto) by workers.placement.

    Order: interfaces as in the file, queues ascending, members ascending
    (the owner first). `spread` gives each worker the next CPU, over every
    interface's workers in turn, so as many CPUs as there are workers get
    one. `by_queue` starts again at the first CPU for each interface: the
    k-th worker of every interface shares the k-th CPU, as in DPDK's and
    VPP's one core per queue index: a reply that comes back on queue k is
    received on the CPU that forwarded the request (on veth, inside that
    worker's own sendto()), and its worker is woken there. Both put
    the members of a queue on different CPUs where there are enough, and
    both are the same layout when every interface has a multiple of the
    CPUs' count of workers. `adaptive` starts by queue and gives each
    worker its spread CPU as well (`spread_cpu`), where the supervisor
    moves it while forwarding keeps the CPUs it shares busy
    (control/placement.py). Call check_host first.
    """
    if config.workers.cpus == "auto":
        cpus = sorted(host.online_cpus())
    else:
        cpus = list(config.workers.cpus)
    placement = config.workers.placement
    plans: list[WorkerPlan] = []
    for iface in config.interfaces:
        slots = [(queue, member) for queue in _owned_queues(iface, host)
                 for member in range(iface.fanout)]
        spread = len(plans)
        first = spread if placement == "spread" else 0
        plans += [WorkerPlan(netdev=iface.name, queue=queue, cpu=cpus[(first + k) % len(cpus)],
                             name=worker_name(iface.name, queue, member, iface.fanout),
                             member=member, fanout=iface.fanout,
                             spread_cpu=(cpus[(spread + k) % len(cpus)]
                                         if placement == "adaptive" else None))
                  for k, (queue, member) in enumerate(slots)]
    return tuple(plans)


def format_cpulist(cpus: frozenset[int] | set[int]) -> str:
    """The kernel's cpulist notation, as in /sys/devices/system/cpu/online: 0-3,6."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) or "none"


# --- host checks --------------------------------------------------------------

def _check_netdev(errs: _Errors, path: str, iface: InterfaceConfig, host: HostFacts) -> None:
    name = iface.name
    if not host.netdev_exists(name):
        errs.at(f"{path}.name", f"netdev {name!r} not found; see 'ip link show'")
        return
    steering = iface.steering
    if steering.channels is not None:
        # the queues are checked against the channels at parse time, the
        # channels against the driver's maximum by steering.check_steering()
        return
    if iface.queues == "all" and steering.rss_queues is None and not steering.flows:
        return
    try:
        count = host.rx_queue_count(name)
    except OSError as exc:  # the netdev went away between the two questions
        errs.at(f"{path}.queues", f"cannot count the rx queues of {name}: {exc}")
        return
    if iface.queues == "all":
        # steering refers to queues that 'all' means on this host
        owned = range(count)
        if steering.rss_queues is not None:
            _owned_refs(errs, f"{path}.steering.rss_queues", steering.rss_queues, owned, name)
        for j, rule in enumerate(steering.flows):
            if rule.queue not in owned:
                errs.at(f"{path}.steering.flows[{j}].queue", f"queue {rule.queue} is not "
                        f"owned by {name} (owned: {_queue_text(owned)}); steer only to "
                        "queues xdpd serves")
        return
    missing = [q for q in iface.queues if q >= count]
    if missing:
        what = "queue" if len(missing) == 1 else "queues"
        have = "1 rx queue" if count == 1 else f"{count} rx queues"
        errs.at(f"{path}.queues", f"{what} {', '.join(map(str, missing))} not on {name} "
                                  f"({have}; see 'ethtool -l {name}')")


def _check_worker_count(errs: _Errors, config: Config, host: HostFacts) -> None:
    """Workers (each queue's fanout members) and spare slots must fit the
    control area's MAX_WORKERS.  An interface whose queues cannot be counted
    here (its netdev missing: reported already) counts for none, so what is
    reported is a total the file needs at least."""
    counts = []
    for iface in config.interfaces:
        if iface.queues != "all":
            queues = len(iface.queues)
        elif iface.steering.channels is not None:
            queues = iface.steering.channels
        elif host.netdev_exists(iface.name):
            try:
                queues = host.rx_queue_count(iface.name)
            except OSError:     # the netdev went away meanwhile: nothing to count
                continue
        else:
            continue
        counts.append((iface, queues))
    workers = sum(queues * iface.fanout for iface, queues in counts)
    spare = config.umem.spare_workers
    if workers + spare <= MAX_WORKERS:
        return
    each = "; ".join(f"{iface.name}: {queues} {'queue' if queues == 1 else 'queues'} "
                     f"x fanout {iface.fanout}" for iface, queues in counts)
    errs.at("interfaces", f"{workers} workers ({each}) and umem.spare_workers {spare} need "
            f"{workers + spare} worker slots, more than the {MAX_WORKERS} xdpd has; lower "
            "an interface's fanout, own fewer queues or lower umem.spare_workers")


def _owned_queues(iface: InterfaceConfig, host: HostFacts) -> tuple[int, ...] | range:
    if iface.queues == "all":
        # with steering.channels, the count xdpd sets at start, not the one now:
        # planning does not depend on whether the channels are set yet
        if iface.steering.channels is not None:
            return range(iface.steering.channels)
        return range(host.rx_queue_count(iface.name))
    return iface.queues


def napi_placement(config, plans, host) -> list[tuple[object, str, str]]:
    """(plan, finding, fix) per worker pinned to the CPU that runs its
    queue's NAPI poll (the queue's IRQ CPU): the two take turns on one core,
    and a spinning or busy-polling worker starves the NAPI poll it waits for.
    The supervisor logs these at start; doctor reports them."""
    w = config.workers
    polling = w.idle == "spin" or w.busy_poll
    out = []
    for plan in plans:
        irq = host.queue_irq_cpus(plan.netdev, plan.queue)
        # with adaptive placement the worker also runs on its spread CPU
        cpu = next((c for c in (plan.cpu, plan.spread_cpu) if c is not None and c in irq), None)
        if cpu is None:
            continue
        what = ("it spins, so the NAPI poll only runs when the scheduler preempts it "
                "and the rx ring overflows" if polling else
                "the worker and the NAPI poll take turns on one core")
        where = "" if cpu == plan.cpu else " (where adaptive placement moves it while busy)"
        out.append((plan, f"worker CPU {cpu}{where} also takes the queue's interrupts (NAPI); "
                          f"{what}",
                    "pin the worker elsewhere (workers.cpus) or move the IRQ "
                    "(/proc/irq/N/smp_affinity_list)"))
    return out


def fragments(packet: int, frame: int) -> int:
    """Buffers one packet of `packet` bytes takes in copy mode: the kernel
    copies it into frames that each keep XDP_HEADROOM free."""
    return max(1, -(-packet // (frame - XDP_HEADROOM)))


def max_mtu(frame: int) -> int:
    """The largest MTU whose full-size packet (with L2_OVERHEAD) fits one
    frame of `frame` bytes."""
    return frame - XDP_HEADROOM - L2_OVERHEAD


def max_chain(frame: int) -> int:
    """The longest frame (headers included) a descriptor chain of copy
    mode's COPY_MAX_SEGS buffers holds."""
    return COPY_MAX_SEGS * (frame - XDP_HEADROOM)


def frame_size_for(mtu: int) -> int | None:
    """The smallest umem.frame_size whose one frame holds a full-size packet
    of `mtu`; None when none does."""
    return next((f for f in FRAME_SIZES if mtu <= max_mtu(f)), None)


def interface_mtus(config, host) -> dict[str, int]:
    """The configured interfaces' MTUs, of those that can be read (one that
    cannot is reported where its MTU matters: start-up's egress check,
    check-config, doctor)."""
    mtus = {}
    for iface in config.interfaces:
        try:
            mtus[iface.name] = host.mtu(iface.name)
        except OSError:
            pass
    return mtus


def multi_buffer(umem, mtus) -> bool:
    """Whether the sockets take descriptor chains (XDP_USE_SG):
    umem.multi_buffer on or off, or auto: when a full-size packet of one of
    the interfaces' MTUs needs more than one frame."""
    if umem.multi_buffer != "auto":
        return umem.multi_buffer == "on"
    return any(mtu > max_mtu(umem.frame_size) for mtu in mtus)


def frame_use(mtu: int, frame: int, chains: bool) -> str:
    """What a packet of an interface's MTU takes, in words (check-config,
    start-up); chains: multi-buffer is on."""
    need = mtu + L2_OVERHEAD
    n = fragments(need, frame)
    if n == 1:
        return f"MTU {mtu}: a full-size packet ({need} B with headers) fits one {frame} B frame"
    if chains and n <= COPY_MAX_SEGS:
        return (f"MTU {mtu}: a full-size packet ({need} B with headers) takes {n} buffers of "
                f"{frame} B, one descriptor chain (multi-buffer)")
    if chains:
        return (f"MTU {mtu}: a full-size packet ({need} B with headers) takes {n} buffers of "
                f"{frame} B, more than the {COPY_MAX_SEGS} one packet may take in copy mode, "
                f"so packets over {max_chain(frame)} B are dropped (chain_invalid)")
    return (f"MTU {mtu}: a full-size packet ({need} B with headers) takes {n} buffers of "
            f"{frame} B; with umem.multi_buffer: off workers take one buffer per packet, so "
            f"packets over {max_mtu(frame)} B are dropped (see xdpd doctor)")
