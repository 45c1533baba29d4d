"""Facts about this host's netdevs and CPUs, read from the kernel; changes nothing.

Design
------
Every answer is for the network namespace the process is in *now*, which
rules out trusting /sys/class/net: sysfs shows the netdevs of the namespace
that mounted it.  `ip netns exec` remounts /sys for the new namespace, but
`nsenter --net` (setns(2) in general) does not, so a daemon started that way
sees another namespace's netdevs under /sys.  Hence:

* existence and ifindex: if_nametoindex(3), an ioctl on a socket, and a
  socket belongs to the namespace it was created in;
* MAC address and allocated queue count: rtnetlink (pyroute2), also per
  namespace;
* rx queue count: what matters for AF_XDP is real_num_rx_queues, the queues
  in use (the kernel refuses to bind a socket to a queue at or above it).
  rtnetlink does not report it: IFLA_NUM_RX_QUEUES is the number allocated
  (a veth's `numrxqueues`), which `ethtool -L` can lower the real count below.
  So, best first: the rx-* entries under /sys/class/net/NAME/queues, which
  follow real_num_rx_queues exactly, when /sys is this namespace's; else the
  ethtool channel counts (what `ethtool -l` prints, asked per namespace);
  else, for drivers without channel support, IFLA_NUM_RX_QUEUES.

pyroute2 is imported inside the functions that need it, so importing this
module costs nothing and the config checker can run without it.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

from xdpd.kernel import cpuidle
from xdpd.kernel.ethtool import Ethtool
from xdpd.kernel.xdp_features import XdpFeatures, xdp_features

__all__ = ["Host", "HostFacts", "NetdevError", "parse_cpulist"]

SYS_NET = "/sys/class/net"
SYS_CPU_ONLINE = "/sys/devices/system/cpu/online"
PROC_INTERRUPTS = "/proc/interrupts"
PROC_IRQ = "/proc/irq"

SIOCETHTOOL = 0x8946
ETHTOOL_GCHANNELS = 0x3C

# struct ethtool_channels {
#         __u32   cmd;
#         __u32   max_rx;
#         __u32   max_tx;
#         __u32   max_other;
#         __u32   max_combined;
#         __u32   rx_count;
#         __u32   tx_count;
#         __u32   other_count;
#         __u32   combined_count;
# };
_ETHTOOL_CHANNELS = struct.Struct("9I")

# struct ifreq {
#         char ifr_name[IFNAMSIZ];        /* 16 */
#         union { ...; void *ifr_data; }; /* 24 bytes: struct ifmap is the largest member */
# };
_IFREQ = struct.Struct("16sP")
_IFREQ_SIZE = 40


class NetdevError(OSError):
    """A netdev question the kernel could not answer; errno is kept."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class HostFacts(Protocol):
    """What the config checker asks of a host; tests pass a fake."""

    def netdev_exists(self, name: str) -> bool: ...

    def rx_queue_count(self, name: str) -> int: ...

    def online_cpus(self) -> frozenset[int]: ...


def completes_checksums(mode: str, kind: str) -> bool:
    """Whether xdpd completes partial TCP/UDP checksums of the frames an
    interface receives (interfaces[].checksum).  auto: on every software
    netdev (`kind`: veth, tun, netkit, ...), where a local stack's frames
    arrive as it sent them, partial checksum and all when its TX offload is
    on; never on a NIC's own netdev (kind ""), where frames come from a
    wire.  Completing is safe anywhere (a frame whose checksum verifies is
    never touched), so the choice only saves the check where it cannot
    matter."""
    return mode == "complete" or (mode == "auto" and kind != "")


def partial_checksums_left(host, name: str, kind: str) -> tuple[str, str]:
    """For a software netdev whose partial checksums xdpd leaves
    (`checksum: off`): what then happens, naming who sends them, and the
    fix (for the start log and `xdpd doctor` alike)."""
    try:
        peer = host.link_peer(name)
    except OSError:
        peer = None
    sender = f"its peer {peer}" if peer else f"the sender behind this {kind}"
    fix = peer.offload_off_command() if peer else "ethtool -K DEV tx off on the sender"
    return (f"checksum: off on a {kind}: TCP and UDP from {sender} with TX checksum offload "
            "on (the default) arrive with partial checksums and are forwarded so; their "
            "receivers drop them",
            f"set checksum: auto, or turn the sender's offload off: {fix}")


@dataclass(frozen=True)
class LinkPeer:
    """The other end of a veth, for messages."""
    ifindex: int
    name: str | None        # None: its namespace could not be entered
    netns: str | None       # "": ours; None: a namespace not under /run/netns

    def offload_off_command(self) -> str:
        """The command that turns the peer's TX checksum offload off."""
        dev = self.name or f"<the netdev with ifindex {self.ifindex}>"
        where = "" if self.netns == "" else \
            (f"ip netns exec {self.netns} " if self.netns else
             "nsenter --net=<its namespace> ")
        return f"{where}ethtool -K {dev} tx off"

    def __str__(self) -> str:
        name = self.name or f"ifindex {self.ifindex}"
        if self.netns == "":
            return name
        return f"{name} in netns {self.netns}" if self.netns else \
            f"ifindex {self.ifindex} in another netns"


class Host:
    """The real host, as seen from the current network namespace."""

    def netdev_exists(self, name: str) -> bool:
        try:
            socket.if_nametoindex(name)
        except (OSError, ValueError):  # ValueError: a name with a NUL in it
            return False
        return True

    def ifindex(self, name: str) -> int:
        try:
            return socket.if_nametoindex(name)
        except (OSError, ValueError):
            raise _not_found(name) from None

    def ifname(self, ifindex: int) -> str:
        try:
            return socket.if_indextoname(ifindex)
        except OSError:
            raise NetdevError(errno.ENODEV, f"no netdev with ifindex {ifindex}; "
                                            "see 'ip link show'") from None

    def rx_queue_count(self, name: str) -> int:
        """The rx queues in use (real_num_rx_queues); see the module docstring."""
        self.ifindex(name)  # a missing netdev is an error, not a count
        count = _sysfs_rx_queues(name)
        if count is None:
            count = _ethtool_rx_channels(name)
        if count is None:
            count = _netlink_link(name).get_attr("IFLA_NUM_RX_QUEUES")
        return count

    def mtu(self, name: str) -> int:
        return _netlink_link(name).get_attr("IFLA_MTU")

    def xdp_features(self, name: str) -> XdpFeatures:
        """Its driver's XDP features (rx-sg: multi-buffer packets in XDP) and
        zero-copy segment limit; XdpFeaturesError (an OSError) when the
        kernel has no netdev netlink family (before 6.3)."""
        return xdp_features(self.ifindex(name))

    def link_kind(self, name: str) -> str:
        """The rtnetlink kind of a software netdev ("veth", "tun", "macvlan",
        ...); "" for a device driver's own netdev (a NIC)."""
        info = _netlink_link(name).get_attr("IFLA_LINKINFO")
        return (info.get_attr("IFLA_INFO_KIND") or "") if info else ""

    def link_peer(self, name: str) -> LinkPeer | None:
        """A veth's other end: its ifindex and, when it is in another
        network namespace, that namespace's name under /run/netns (None
        where none of them is it)."""
        link = _netlink_link(name)
        peer = link.get_attr("IFLA_LINK")
        if not peer:
            return None
        nsid = link.get_attr("IFLA_LINK_NETNSID")
        if nsid is None:
            return LinkPeer(peer, self.ifname(peer), netns="")
        netns = _netns_of_nsid(nsid)
        return LinkPeer(peer, _ifname_in(netns, peer) if netns else None, netns)

    def mac_address(self, name: str) -> bytes:
        address = _netlink_link(name).get_attr("IFLA_ADDRESS")
        if not address:  # e.g. a tun device in L3 mode
            raise NetdevError(errno.EADDRNOTAVAIL, f"netdev {name!r} has no link-layer address")
        return bytes.fromhex(address.replace(":", ""))

    def online_cpus(self) -> frozenset[int]:
        """CPUs that are online and that this process may run on.

        The affinity mask alone can name CPUs that went offline; the online
        list alone ignores a cpuset or taskset the daemon was started under.
        """
        allowed = frozenset(os.sched_getaffinity(0))
        try:
            with open(SYS_CPU_ONLINE) as f:
                online = parse_cpulist(f.read())
        except OSError:
            return allowed
        return allowed & online


    def queue_irq_cpus(self, name: str, queue: int) -> frozenset[int]:
        """CPUs that take the interrupts of rx queue `queue` of `name`, and so
        run its NAPI poll; empty where the netdev has no per-queue IRQ."""
        return queue_irq_cpus(name, queue)

    # CPU idle states for `xdpd doctor` (kernel/cpuidle.py)
    def cpu_idle_driver(self) -> str | None:
        return cpuidle.idle_driver()

    def cpu_idle_states(self, cpu: int) -> tuple:
        return cpuidle.idle_states(cpu)

    def cpu_wake_limit(self, cpu: int) -> int | None:
        """The CPU's wake-up latency cap (None: none); OSError where the
        kernel has no PM QoS file for it."""
        return cpuidle.read_limit(cpu)

    def cpu_wake_limit_writable(self, cpu: int) -> bool:
        return os.access(cpuidle.limit_path(cpu), os.W_OK)

    # ethtool reads for `xdpd doctor`: EthtoolError (an OSError) keeps the
    # kernel's errno, EOPNOTSUPP where the driver lacks the operation
    def driver(self, name: str) -> str:
        return Ethtool().driver(name)

    def rss_indirection(self, name: str) -> list[int]:
        return Ethtool().get_indirection(name)

    def ntuple_rule_count(self, name: str) -> int:
        return Ethtool().rule_count(name)[0]


# Per-queue IRQ names drivers register, as /proc/interrupts shows them:
# "eth0-TxRx-3" (i40e, ixgbe, bnxt), "ice-eth0-TxRx-3", "eth0-rx-3",
# "eth0-3".  A queue's NAPI poll runs on the CPU its IRQ is delivered to.
# veth and other software devices have no IRQ: their NAPI poll runs on the
# CPU of the sender.
def _irq_name_pattern(name: str) -> re.Pattern:
    return re.compile(r"(?:^|[-_])" + re.escape(name) + r"-(?:(?:TxRx|txrx|rx|fp)-)?(\d+)$")


def queue_irqs(name: str, queue: int, interrupts: str | None = None) -> list[int]:
    """IRQ numbers serving rx queue `queue` of netdev `name`."""
    if interrupts is None:
        try:
            with open(PROC_INTERRUPTS) as f:
                interrupts = f.read()
        except OSError:
            return []
    pattern = _irq_name_pattern(name)
    irqs = []
    for line in interrupts.splitlines()[1:]:
        irq, _, rest = line.partition(":")
        fields = rest.split()
        if not irq.strip().isdigit() or not fields:
            continue
        m = pattern.search(fields[-1])
        if m and int(m.group(1)) == queue:
            irqs.append(int(irq))
    return irqs


def queue_irq_cpus(name: str, queue: int, proc_irq: str = PROC_IRQ,
                   interrupts: str | None = None) -> frozenset[int]:
    cpus: set[int] = set()
    for irq in queue_irqs(name, queue, interrupts):
        for leaf in ("effective_affinity_list", "smp_affinity_list"):
            try:
                with open(os.path.join(proc_irq, str(irq), leaf)) as f:
                    cpus |= parse_cpulist(f.read())
                break
            except (OSError, ValueError):
                continue
    return frozenset(cpus)


def parse_cpulist(text: str) -> frozenset[int]:
    """The kernel's cpulist notation ("0-3,6,8-9") as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def _not_found(name: str) -> NetdevError:
    return NetdevError(errno.ENODEV, f"netdev {name!r} not found; see 'ip link show'")


def _sysfs_rx_queues(name: str) -> int | None:
    """Count queues/rx-*, or None when /sys may belong to another namespace."""
    if not _sysfs_is_current_netns(name):
        return None
    try:
        entries = os.listdir(os.path.join(SYS_NET, name, "queues"))
    except OSError:
        return None
    return sum(1 for entry in entries if entry.startswith("rx-")) or None


def _sysfs_is_current_netns(name: str) -> bool:
    """Whether /sys/class/net lists exactly this namespace's netdevs.

    Sysfs carries no namespace id to compare, so compare what it lists, name
    and ifindex, with what a socket of this namespace reports.
    """
    try:
        current = {n: i for i, n in socket.if_nameindex()}
        listed = set(os.listdir(SYS_NET))
        if listed != set(current) or name not in current:
            return False
        with open(os.path.join(SYS_NET, name, "ifindex")) as f:
            return int(f.read()) == current[name]
    except (OSError, ValueError):
        return False


def _ethtool_rx_channels(name: str) -> int | None:
    """rx + combined channels from ETHTOOL_GCHANNELS, or None without driver support."""
    channels = ctypes.create_string_buffer(_ETHTOOL_CHANNELS.pack(ETHTOOL_GCHANNELS, *[0] * 8))
    ifreq = _IFREQ.pack(name.encode(), ctypes.addressof(channels)).ljust(_IFREQ_SIZE, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise _not_found(name) from None
        return None  # EOPNOTSUPP: the driver has no get_channels
    fields = _ETHTOOL_CHANNELS.unpack_from(channels.raw)
    rx_count, combined_count = fields[5], fields[8]
    # a driver may report only maximums; zero is no answer, not a count
    return (rx_count + combined_count) or None


def _netlink_link(name: str):
    """The RTM_NEWLINK answer for `name` in this namespace."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            return tuple(ipr.link("get", ifname=name))[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise _not_found(name) from None
            raise NetdevError(exc.code, f"netlink RTM_GETLINK for {name!r} failed: "
                                        f"{os.strerror(exc.code)}") from None


def _netns_of_nsid(nsid: int) -> str | None:
    """The name under /run/netns of the namespace our namespace knows as
    `nsid` (RTM_GETNSID on each), or None."""
    from pyroute2 import IPRoute
    try:
        names = sorted(os.listdir("/run/netns"))
    except OSError:
        return None
    with IPRoute() as ipr:
        for name in names:
            try:
                fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                answer = ipr.get_netnsid(fd=fd)
            except Exception:           # pyroute2 raises its own kinds
                answer = None
            finally:
                os.close(fd)
            if answer and answer.get("nsid") == nsid:
                return name
    return None


def _ifname_in(netns: str, ifindex: int) -> str | None:
    """The name of `ifindex` inside /run/netns/NETNS."""
    from pyroute2 import NetNS
    try:
        with NetNS(netns) as ns:
            links = ns.get_links(ifindex)
            return links[0].get_attr("IFLA_IFNAME") if links else None
    except Exception:                   # the namespace went away, no permission
        return None
