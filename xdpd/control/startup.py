"""Setting up what the workers run on: interfaces, the UMEM, sockets, table.

Owns: the steps of start-up after recovery (steering, programs loaded and
attached, the shared UMEM and control area, the AF_XDP sockets of every
worker and their direct sockets, the forwarding table), each with its undo
(_remove_interface; the UMEM and sockets close in Supervisor.stop()).  A
reload reuses them for what it adds.
Must not: spawn or wait for workers (supervisor.py), or decide what a
reload changes (apply.py).
"""
from __future__ import annotations

import errno
import logging
import os
import time

from xdpd import exitcodes
from xdpd.config.model import (COPY_MAX_SEGS, L2_OVERHEAD, MAX_NETDEVS, Config,
                               InterfaceConfig, WorkerPlan, WorkersConfig)
from xdpd.config.plan import (frame_size_for, frame_use, interface_mtus, max_mtu, multi_buffer,
                              napi_placement)
from xdpd.control.ops import SetupError, resolve_worker_user
from xdpd.control.steering import SteeringError
from xdpd.control.table import MAX_DIRECT, compile_table
from xdpd.control.workers import (REBIND_TIMEOUT_S, TABLE_ACK_TIMEOUT_S, DirectSocket,
                                  Interface, Worker, WorkerState)
from xdpd.datapath.umem import UmemGeometry
from xdpd.kernel.errors import errname
from xdpd.kernel.libbpf import BpfError
from xdpd.kernel.netdev import NetdevError, partial_checksums_left
from xdpd.kernel.xsk import RingSizes, XskError

log = logging.getLogger("xdpd.supervisor")


class Startup:
    """The supervisor's set-up steps (Supervisor.start() runs them in order;
    a reload runs some for what it adds); mixed into Supervisor, whose
    attributes they use: config, ops, host, interfaces, workers, umem,
    free_slots, eventfds, zero_copy."""

    def _resolve_worker_user(self) -> None:
        """workers.user and workers.group as ids, before anything is set up:
        each worker and standby becomes that user (kernel/privileges.py)."""
        self.worker_uid, self.worker_gid = resolve_worker_user(self.config.workers)

    def _log_worker_memory(self) -> None:
        # rss counts the pages of the shared UMEM and control area a worker
        # has touched; uss is what the worker alone costs (its interpreter).
        for w in self.workers:
            use = self.worker_usage(w.id, w.proc.pid) if w.proc else None
            if use:
                log.info("%s: pid %d rss %.1f MiB, unique %.1f MiB", w.name, w.proc.pid,
                         use["rss_bytes"] / 2**20, use["uss_bytes"] / 2**20)

    def _check_napi_placement(self, plans) -> list[str]:
        """Warn about a worker pinned to the CPU that runs its queue's NAPI
        poll (the queue's IRQ CPU): the two take turns on one core, and a
        spinning or busy-polling worker starves the NAPI poll it waits for."""
        warnings = [f"{plan.name}: {finding}. {fix[0].upper()}{fix[1:]}"
                    for plan, finding, fix in napi_placement(self.config, plans, self.host)]
        for text in warnings:
            log.warning("%s", text)
        return warnings

    def _apply_steering(self, ifaces=None) -> None:
        for iface_cfg in self.config.interfaces if ifaces is None else ifaces:
            if iface_cfg.steering.empty:
                continue
            try:
                self.steering.apply(iface_cfg)
            except SteeringError as e:
                raise SetupError(f"steering of {iface_cfg.name}: {e}") from None

    def _load_programs(self, plans) -> None:
        for iface_cfg in self.config.interfaces:
            self._add_interface(iface_cfg, [p.queue for p in plans if p.netdev == iface_cfg.name])

    def _add_interface(self, iface_cfg: InterfaceConfig, queues: list[int]) -> Interface:
        """Load rr_redirect for a netdev, own `queues` (no sockets yet: the
        fallback applies), attach.  The netdev gets the lowest free index
        in the forwarding table, kept for as long as it is configured."""
        used = {i.index for i in self.interfaces}
        index = next(n for n in range(len(used) + 1) if n not in used)
        if index >= MAX_NETDEVS:
            raise SetupError(f"at most {MAX_NETDEVS} interfaces", exitcodes.CONFIG)
        ifindex = self.host.ifindex(iface_cfg.name)
        try:
            prog = self.ops.load_program(iface_cfg.name)
        except BpfError as e:
            raise SetupError(f"load rr_redirect for {iface_cfg.name}: {e}") from None
        iface = Interface(iface_cfg.name, index, ifindex, prog, queues=list(queues),
                          rx_queues=self.host.rx_queue_count(iface_cfg.name),
                          config=iface_cfg, kind=self._link_kind(iface_cfg.name))
        self.interfaces.append(iface)
        for q in queues:
            self._own_queue(iface, q)
        if iface_cfg.pass_to_kernel:
            prog.set_pass_rules(iface_cfg.pass_to_kernel)
        self._write_record()                  # before the attach: a kill in between is covered
        try:
            iface.xdp_mode = prog.attach(ifindex, iface_cfg.name, iface_cfg.xdp_mode)
        except BpfError as e:
            raise SetupError(self._attach_refused(iface_cfg.name, e)) from None
        self._write_record()                  # with the mode the kernel accepted
        log.info("%s: rr_redirect attached (%s), queues %s", iface.name,
                 iface.xdp_mode, ",".join(map(str, queues)))
        self._say_checksums(iface)
        self._say_frame_room(iface)
        return iface

    def _attach_refused(self, name: str, e: BpfError) -> str:
        """Why the attach failed; ERANGE (the driver takes no packet over a
        buffer in native XDP: no multi-buffer there) with the MTU it
        refused."""
        if e.errno != errno.ERANGE:
            return str(e)
        try:
            mtu = f"MTU {self.host.mtu(name)}"
        except OSError:
            mtu = "MTU unknown"
        return f"{name}: {mtu}: {e}"

    def _decide_multi_buffer(self) -> None:
        """umem.multi_buffer for this run (the UMEM's sockets are bound
        once, all alike): auto turns descriptor chains on when a full-size
        packet of some interface's MTU needs more than one frame."""
        mtus = interface_mtus(self.config, self.host).values()
        self.multi_buffer = multi_buffer(self.config.umem, mtus)
        batch = self.config.workers.batch_size
        if self.multi_buffer and batch < COPY_MAX_SEGS:
            raise SetupError(f"workers.batch_size {batch} is less than the {COPY_MAX_SEGS} "
                             "descriptors one packet may take with multi-buffer "
                             f"(umem.multi_buffer: {self.config.umem.multi_buffer}); set "
                             f"workers.batch_size: {COPY_MAX_SEGS} or more", exitcodes.CONFIG)

    def _say_frame_room(self, iface: Interface) -> None:
        """What a full-size packet of the interface's MTU takes: one frame,
        a descriptor chain (multi-buffer), or, with umem.multi_buffer: off,
        more than one frame, which the kernel drops: say so at start, with
        the fix, instead of leaving it to rx_dropped."""
        try:
            mtu = self.host.mtu(iface.name)
        except OSError:
            return                          # _egress_mtus says it for egresses
        frame = self.config.umem.frame_size
        if mtu <= max_mtu(frame):
            return
        if self.multi_buffer:
            log.info("%s: %s", iface.name, frame_use(mtu, frame, True))
            return
        fits = frame_size_for(mtu)
        if self.config.umem.multi_buffer == "auto":
            # decided at start, when no interface needed it: the sockets
            # are bound, and XDP_USE_SG is a bind flag
            fix = "restart xdpd (multi-buffer is decided at start, with the sockets)"
        else:
            fix = "set umem.multi_buffer: auto"
        fix += f", or umem.frame_size: {fits}" if fits else ""
        log.warning("%s: MTU %d: packets over %d B (+%d B headers) need more than one %d B "
                    "frame, and multi-buffer is off (one buffer per packet): the kernel "
                    "drops them (xdpd_xsk_rx_dropped_packets_total); %s", iface.name, mtu,
                    max_mtu(frame), L2_OVERHEAD, frame, fix)

    def _link_kind(self, name: str) -> str:
        """The netdev's rtnetlink kind ("" for a NIC); "unknown" where
        netlink does not say, which `checksum: auto` treats as software."""
        try:
            return self.host.link_kind(name)
        except NetdevError as e:
            log.warning("%s: link kind unknown (%s); checksum: auto completes partial "
                        "checksums on it", name, e)
            return "unknown"

    def _say_checksums(self, iface: Interface) -> None:
        """What xdpd does with partial checksums from this interface, and,
        where it leaves them, who sends them and the command that stops it."""
        mode = iface.config.checksum
        if iface.completes_checksums:
            log.info("%s: partial TCP/UDP checksums completed before forwarding (%s%s; "
                     "checksum: %s); frames whose checksum verifies are left as they are",
                     iface.name, iface.kind or "a NIC", "" if iface.kind else
                     ", completed as configured", mode)
            return
        if not iface.kind:
            return                          # a NIC: a wire sends no partial checksums
        what, fix = partial_checksums_left(self.host, iface.name, iface.kind)
        log.warning("%s: %s; %s", iface.name, what, fix)

    def _remove_interface(self, iface: Interface) -> None:
        try:
            iface.program.close()             # detaches only if still ours
            log.info("%s: rr_redirect detached", iface.name)
        except OSError as e:
            log.warning("%s: %s", iface.name, e)
            self._detach_failed = (*self._detach_failed, iface)
        self.interfaces.remove(iface)
        try:
            self._write_record()
        except SetupError as e:
            log.warning("%s", e)

    def interface(self, name: str) -> Interface:
        return next(i for i in self.interfaces if i.name == name)

    @staticmethod
    def _own_queue(iface: Interface, queue: int) -> None:
        """queue_conf for an owned queue: its fallback, and how many sockets
        share it (fanout) and how the program spreads packets over them."""
        cfg = iface.config
        iface.program.set_queue(queue, owned=True, fallback=cfg.fallback, fanout=cfg.fanout,
                                spread=cfg.fanout_spread)

    def _zero_copy_choices(self) -> list[bool]:
        # Copy vs zero-copy is a property of the shared UMEM (the kernel makes
        # every sharing socket inherit the owner's mode), so decide it once.
        modes = {i.zero_copy for i in self.config.interfaces}
        if "off" in modes:
            if "on" in modes:
                raise SetupError("interfaces mix zero_copy: on and off, but all sockets "
                                 "share one UMEM and so one mode; make them agree",
                                 exitcodes.CONFIG)
            return [False]
        if modes == {"on"}:
            return [True]
        return [True, False]

    def _create_umem_and_sockets(self, plans) -> None:

        # spare slots: workers a reload may add (the UMEM cannot grow)
        slots = len(plans) + self.config.umem.spare_workers
        geo = UmemGeometry(slots, self.config.umem.frames_per_worker,
                           self.config.umem.frame_size)
        try:
            self.umem = self.ops.create_umem(geo, self.config.umem.hugepages)
        except OSError as e:
            raise SetupError(f"allocate UMEM ({geo.size} bytes) and control area: {e}") from None
        self.hosting.control = self.umem.control
        log.info("UMEM %.1f MiB (%d frames x %d B, %d worker slots, %d spare) on %s; "
                 "control area %.1f MiB", geo.size / 2**20, geo.frames, geo.frame_size,
                 slots, slots - len(plans), self.umem.backing, self.umem.ctl_region.size / 2**20)
        r = self.config.rings
        self.ring_sizes = RingSizes(r.rx, r.tx, r.fill, r.completion)
        choices = self._zero_copy_choices()
        for n, zc in enumerate(choices):
            try:
                sockets = self._bind_sockets(plans, zc)
                break
            except XskError as e:
                if n + 1 < len(choices):
                    log.info("zero-copy not available (%s: %s); using copy mode for "
                             "all sockets", e.what, errname(e.errno))
                    continue
                raise SetupError(str(e)) from None
        self.zero_copy = choices[n]
        self._set_max_segs()
        for wid, (plan, sock) in enumerate(zip(plans, sockets)):
            self._add_worker(wid, plan, sock)
        for w in self.workers:
            self._open_direct(w)
        self._link_groups(self.workers)
        self.free_slots = list(range(len(plans), slots))
        self.eventfds = [self.ops.eventfd() for _ in range(slots)]

    def _set_max_segs(self) -> None:
        """The descriptors one packet may take, with multi-buffer: the
        kernel's limit in copy mode; in zero-copy mode, the smallest
        xdp-zc-max-segs of the interfaces (netdev netlink)."""
        if not self.multi_buffer:
            self.max_segs = 0
            return
        segs = COPY_MAX_SEGS
        if self.zero_copy:
            for iface in self.interfaces:
                try:
                    zc = self.host.xdp_features(iface.name).zc_max_segs
                except OSError:           # XdpFeaturesError too
                    continue
                if zc:
                    segs = min(segs, max(zc, 2))
        self.max_segs = segs
        r = self.ring_sizes
        log.info("multi-buffer: up to %d buffers per packet (%s); rings: rx %d, fill %d "
                 "descriptors", segs, "xdp-zc-max-segs" if self.zero_copy else
                 "copy mode: MAX_SKB_FRAGS + 1", r.rx, r.fill)

    def _add_worker(self, wid: int, plan: WorkerPlan, sock) -> Worker:
        iface = self.interface(plan.netdev)
        w = Worker(wid, plan, iface.index, sock)
        self.workers.append(w)
        return w

    def group(self, w: Worker) -> list[Worker]:
        """The workers sharing w's queue (fanout), the owner first; [w] alone
        without fanout."""
        return sorted((x for x in self.workers if x.plan.netdev == w.plan.netdev and
                       x.plan.queue == w.plan.queue), key=lambda x: x.plan.member)

    def _open_queues(self, workers: list[Worker]) -> None:
        """Socket into XSKMAP: from here on the queue's packets go to its worker."""
        for w in workers:
            self.interface(w.plan.netdev).program.set_socket(w.plan.queue, w.socket.fd,
                                                             member=w.plan.member)

    def _close_queues(self, workers: list[Worker], disown: bool = False) -> None:
        """Socket out of XSKMAP; with disown, the queue is no longer xdpd's
        either (first, so that it goes to the kernel, not to the fallback)."""
        for w in workers:
            iface = self.interface(w.plan.netdev)
            try:
                if disown:
                    iface.program.set_queue(w.plan.queue, owned=False)
                iface.program.clear_socket(w.plan.queue, member=w.plan.member)
            except OSError as e:
                log.warning("%s: removing socket from XSKMAP failed: %s", w.name, e)

    def _link_groups(self, workers: list[Worker]) -> None:
        """Tell the fast path each new worker's place (before it starts):
        its lane (which egress it picks), and in a fanout group the owner
        (FILL and COMPLETION rings) and, to the owner, its members."""
        for w in workers:
            group = self.group(w)
            owner = group[0]
            members = [x.id for x in group[1:]] if w is owner else []
            self.umem.control.set_worker(w.id, w.netdev_index, w.plan.queue,
                                         self.interface(w.plan.netdev).ifindex,
                                         lane=w.plan.lane, owner=owner.id, members=members,
                                         direct=[d.owner for d in w.direct],
                                         xsk_ino=w.socket.ino)

    def _direct_targets(self, w: Worker) -> list[Worker]:
        """The queue owners w sends to on direct sockets: on each other
        interface, the owner of the queue w's lane picks there (as
        compile_table lists egress workers and the fast path picks one).
        None for a worker of an interface with fanout: its group's frames
        are lent by several workers (the fast path, "Direct transmission")."""
        iface = self.interface(w.plan.netdev)
        if not self.config.workers.direct_tx or (iface.config and iface.config.fanout > 1):
            return []
        if self.multi_buffer:
            return []                       # chains go over the fwd rings (chain.c)
        targets: list[Worker] = []
        for other in self.interfaces:
            egress = [x for x in self.workers if x.plan.netdev == other.name]
            if other.name == w.plan.netdev or not egress:
                continue
            owner = self.group(egress[w.plan.lane % len(egress)])[0]
            if owner not in targets and len(targets) < MAX_DIRECT:
                targets.append(owner)
        return targets

    def _open_direct(self, w: Worker) -> None:
        """w's direct sockets, each a TX ring bound to its target's queue
        sharing that socket's rings.  One the kernel refuses is left out
        (logged): w then hands those packets to that queue's worker."""
        for owner in self._direct_targets(w):
            sock = self.ops.create_socket(owner.plan.netdev,
                                          self.host.ifindex(owner.plan.netdev), owner.plan.queue)
            try:
                sock.set_tx_ring(self.ring_sizes.tx)
                sock.bind(zero_copy=self.zero_copy, shared_with=owner.socket)
                self._set_tx_budget(sock, first=False)
            except XskError as e:
                sock.close()
                log.warning("%s: no direct socket on %s (%s); hands those packets to its "
                            "worker instead", w.name, owner.name, e)
                continue
            except BaseException:
                sock.close()
                raise
            w.direct.append(DirectSocket(owner.id, owner.plan.netdev, owner.plan.queue, sock))

    def _bind_sockets(self, plans, zero_copy: bool) -> list:
        sockets: list = []
        owners: dict[tuple[str, int], object] = {}
        try:
            for plan in plans:
                owner = owners.get((plan.netdev, plan.queue)) if plan.member else None
                sockets.append(self._bound_socket(plan, zero_copy,
                                                  owner or (sockets[0] if sockets else None)))
                owners.setdefault((plan.netdev, plan.queue), sockets[-1])
        except BaseException:
            for s in sockets:
                s.close()
            raise
        return sockets

    def _setup_socket(self, sock, zero_copy: bool, shared_with) -> None:
        # a fanout member binds to its owner's socket (same netdev and
        # queue): it shares the owner's FILL and COMPLETION rings
        same_queue = shared_with is not None and (shared_with.netdev, shared_with.queue) == \
            (sock.netdev, sock.queue)
        sock.set_rings(self.ring_sizes, fill_completion=not same_queue)
        sock.bind(zero_copy=zero_copy, shared_with=shared_with,
                  multi_buffer=self.multi_buffer)
        self._set_tx_budget(sock, first=shared_with is None)
        if self.config.workers.busy_poll:
            sock.set_busy_poll(self.config.workers.busy_poll_usecs,
                               self.config.workers.busy_poll_budget)

    def _new_socket(self, plan: WorkerPlan):
        """A socket for a worker a reload adds: bound with XDP_SHARED_UMEM
        to any running socket (the UMEM lives as long as one does), a
        fanout member to its owner's, added just before it."""
        owner = next((w.socket for w in self.workers if w.plan.netdev == plan.netdev and
                      w.plan.queue == plan.queue and w.plan.member == 0), None)
        if plan.member and owner is not None:
            return self._bound_socket(plan, self.zero_copy, owner)
        return self._bound_socket(plan, self.zero_copy, self.workers[0].socket)

    def _bound_socket(self, plan: WorkerPlan, zero_copy: bool, shared_with):
        """A socket bound to plan's queue: sharing shared_with's UMEM, or,
        without one, registering the UMEM.

        A queue whose socket was just closed (removed by the previous
        reload, or held by the workers of an xdpd that was killed) stays
        busy for a moment: the kernel releases the socket's buffer pool
        from a work queue, and bind() answers EBUSY until then."""
        deadline = time.monotonic() + REBIND_TIMEOUT_S
        while True:
            sock = self.ops.create_socket(plan.netdev, self.host.ifindex(plan.netdev),
                                          plan.queue)
            try:
                if shared_with is None:
                    sock.register_umem(self.umem.umem.addr, self.umem.geometry.size,
                                       self.umem.geometry.frame_size)
                self._setup_socket(sock, zero_copy, shared_with)
                return sock
            except XskError as e:
                sock.close()
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
            except BaseException:
                sock.close()
                raise
            time.sleep(0.01)

    def _set_tx_budget(self, sock, first: bool) -> None:
        budget = self.config.workers.tx_budget
        if budget == 0:
            return
        explicit = budget != "auto"
        if not explicit:
            budget = min(WorkersConfig.AUTO_TX_BUDGET, self.ring_sizes.tx)
            if budget < 32:
                return
        if not sock.set_tx_budget(budget) and first:
            if explicit:
                log.warning("workers.tx_budget: this kernel has no XDP_MAX_TX_SKB_BUDGET "
                            "(Linux 6.17+); sendto() keeps sending at most 32 per call")
            else:
                log.debug("no XDP_MAX_TX_SKB_BUDGET in this kernel; copy-mode TX budget "
                          "stays at 32 per sendto()")

    def _write_table(self, old_config: Config | None = None,
                     exclude: frozenset[int] = frozenset()) -> None:
        """Publish the forwarding table; wait until every running worker
        switched to it (they do between two batches), so that the next
        write cannot overwrite a table a worker is still reading."""
        self.mtus = self._egress_mtus()
        table = compile_table(self.config, self.interfaces, self.workers, old_config, exclude,
                              self.mtus)
        complete = [i.index for i in self.interfaces if i.completes_checksums]
        # a direct socket may be used while its queue's worker stays
        serving = {w.id for w in self.workers if w.id not in exclude}
        direct_ok = {w.id: sum(1 << j for j, d in enumerate(w.direct)
                               if d.socket is not None and d.owner in serving)
                     for w in self.workers if w.direct}
        self.table_generation = gen = self.umem.control.write_table(
            table, complete_checksums=complete, direct_ok=direct_ok)
        waiting = [w for w in self.workers if w.proc is not None and
                   w.state in (WorkerState.RUNNING, WorkerState.DRAINING)]
        for w in waiting:
            self._wake(w.id)
        deadline = time.monotonic() + TABLE_ACK_TIMEOUT_S
        while waiting:
            waiting = [w for w in waiting if w.proc.poll() is None and
                       self.umem.control.worker_liveness(w.id)[3] < gen]
            if not waiting:
                break
            if time.monotonic() > deadline:
                log.warning("table %d: not acknowledged within %.0f s by %s (hung? the "
                            "heartbeat check replaces it)", gen, TABLE_ACK_TIMEOUT_S,
                            ", ".join(w.name for w in waiting))
                break
            time.sleep(0.001)

    def _egress_mtus(self) -> dict[str, int]:
        """The MTU of every interface a rule forwards to, read whenever the
        table is written (start and reload)."""
        mtus = {}
        for iface in self.interfaces:
            try:
                mtus[iface.name] = self.host.mtu(iface.name)
            except OSError as e:
                log.warning("%s: cannot read the MTU (%s); frames of any length are "
                            "forwarded to it", iface.name, e)
        return mtus

    def _wake(self, wid: int) -> None:
        """Wake a worker sleeping in poll() (its eventfd), e.g. to switch tables."""
        try:
            os.write(self.eventfds[wid], (1).to_bytes(8, "little"))
        except (OSError, IndexError):
            pass
