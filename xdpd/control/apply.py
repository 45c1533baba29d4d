"""Applying a reload: the diff (config/diff.py) carried out in the order that
keeps packets (the steps are listed in supervisor.py's opening comment).

Owns: Reloading.reload() and its steps: additions, the new table, drains of
removed workers, removals, and the undo of additions when a step fails.
Must not: classify changes (config/diff.py does) or run the loop.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import replace

from xdpd.config.diff import Refused, diff
from xdpd.config.file import read_config_file
from xdpd.config.model import MAX_NETDEVS, Config, ConfigError, InterfaceConfig
from xdpd.config.plan import check_host, plan_workers
from xdpd.config.schema import parse_config
from xdpd.control.ops import SetupError
from xdpd.control.steering import SteeringError, check_steering
from xdpd.control.workers import (DRAIN_TIMEOUT_S, STOP_TIMEOUT_S, Interface, Worker,
                                  WorkerState)
from xdpd.datapath import _fastpath

log = logging.getLogger("xdpd.supervisor")


class Reloading:
    """`xdpd reload` and SIGHUP: a new configuration applied to the running
    daemon without losing packets; mixed into Supervisor."""

    def reload(self, path: str | None = None, text: str | None = None) -> tuple[bool, dict, str | None]:
        """Apply a new configuration: the file xdpd runs with, or `text`
        (named `path` in messages) from `xdpd reload --config`.  Returns
        (ok, result, error); the running configuration stays on any error."""
        started = time.monotonic()
        source = path or self.config.source
        if self.notifier:
            self.notifier.reloading()
        changes: list[str] = []
        try:
            if text is None:
                text = read_config_file(source)
            new = parse_config(text, source=source)
            # `xdpd reload --config X` applies X once: the daemon's own file
            # stays the one a later reload (or SIGHUP) reads
            new = replace(new, source=self.config.source)
            check_host(new, self.host)
            if any(not i.steering.empty for i in new.interfaces):
                check_steering(new, self.ops.ethtool())
            plan = self._plan_reload(new)
            changes = plan.summary()
            if plan.empty and self._egress_mtus() != self.mtus:
                self._write_table()
                changes = ["egress MTU changed: " + ", ".join(
                    f"{n} {self.mtus.get(n)}" for n in sorted(self.mtus))]
                outcome, message = "applied", changes[0]
            elif plan.empty:
                outcome, message = "unchanged", "nothing to change"
            else:
                # what the reload removes runs in its own process
                self.hosting.release(set(plan.remove_workers), self.workers)
                try:
                    self._apply(plan, new)
                finally:
                    self.hosting.resume()
                outcome, message = "applied", "; ".join(changes)
        except ConfigError as e:
            outcome, message = "invalid", str(e)
        except Refused as e:
            outcome, message = "refused", str(e)
        except (SetupError, OSError) as e:
            outcome, message = "failed", f"{e}; what was added is undone, the rest runs on"
        duration = time.monotonic() - started
        ok = outcome in ("applied", "unchanged")
        self.reloads[outcome] += 1
        self.last_reload = {"at": time.time(), "result": outcome, "message": message,
                            "duration_seconds": round(duration, 6), "source": source,
                            "changes": changes}
        if outcome == "applied":
            self.generation += 1
            self.last_reload_success = self.last_reload["at"]
        (log.info if ok else log.error)("reload from %s: %s (%.1f ms): %s", source, outcome,
                                        duration * 1e3, message)
        self._take_snapshot(force=True)
        if self.notifier:
            self.notifier.ready(self._status_line())
        result = {"result": outcome, "message": message, "changes": changes,
                  "generation": self.generation, "duration_seconds": round(duration, 6)}
        return ok, result, None if ok else message

    def _plan_reload(self, new: Config):
        new_plans = list(plan_workers(new, self.host))
        # Workers that stay keep their CPU; only new ones take the new plan's.
        old_plans = [w.plan for w in self.workers]
        plan = diff(self.config, new, old_plans, new_plans, len(self.free_slots), self.zero_copy)
        if len(self.interfaces) - len(plan.remove_interfaces) + len(plan.add_interfaces) > MAX_NETDEVS:
            raise Refused(f"at most {MAX_NETDEVS} interfaces")
        return plan

    def _apply(self, plan, new: Config) -> None:
        old = self.config
        added_ifaces: list[Interface] = []
        added: list[Worker] = []
        # 1-2: everything new, undone if any step fails
        try:
            self._apply_steering(plan.add_interfaces)
            for iface_cfg in plan.add_interfaces:
                queues = [p.queue for p in plan.add_workers if p.netdev == iface_cfg.name]
                added_ifaces.append(self._add_interface(iface_cfg, queues))
            for p in plan.add_workers:
                iface = self.interface(p.netdev)
                if iface not in added_ifaces and p.queue not in iface.queues:
                    self._own_queue(iface, p.queue)
                    iface.queues.append(p.queue)
                sock = self._new_socket(p)
                added.append(self._add_worker(self.free_slots.pop(0), p, sock))
            for w in added:
                self._open_direct(w)
            self._link_groups(added)
            for w in added:
                self.spawn_worker(w)
            self._wait_running(added)
            self._update_steering(old, plan.steering_changes)
        except BaseException:
            self._undo_additions(added, added_ifaces)
            for iface_cfg in plan.add_interfaces:
                self.steering.undo(iface_cfg.name)
            raise
        # 3-4: the switch
        for iface_cfg in plan.queue_conf_changes:
            iface = self.interface(iface_cfg.name)
            iface.config = iface_cfg
            for q in iface.queues:
                self._own_queue(iface, q)
        for iface_cfg in plan.pass_rule_changes:
            # the program stays attached: the new rule set replaces the old
            # in one map update (xdp_program.py, set_pass_rules)
            iface = self.interface(iface_cfg.name)
            iface.config = iface_cfg
            iface.program.set_pass_rules(iface_cfg.pass_to_kernel)
        for iface_cfg in plan.checksum_changes:
            # a flag of the netdev in the table written next
            iface = self.interface(iface_cfg.name)
            iface.config = iface_cfg
            self._say_checksums(iface)
        removed = set(plan.remove_workers)
        removing = [w for w in self.workers if w.name in removed]
        self.config = new
        self._write_table(old_config=old, exclude=frozenset(w.id for w in removing))
        self._open_queues(added)
        # 5-6: what goes away
        if removing:
            self._drain(removing)
        for name in plan.remove_interfaces:
            self._remove_interface(self.interface(name))
            self.steering.undo(name)
        if removing or plan.remove_interfaces:
            self._write_table()

    def _update_steering(self, old: Config, changed: list[InterfaceConfig]) -> None:
        """Only what differs (steering.Steering.update); a failure is
        reported, what was changed stays on the journal."""
        for iface_cfg in changed:
            try:
                self.steering.update(old.interface(iface_cfg.name), iface_cfg)
            except SteeringError as e:
                raise SetupError(f"steering of {iface_cfg.name}: {e}") from None

    def _undo_additions(self, added: list[Worker], added_ifaces: list[Interface]) -> None:
        for w in added:
            self.kill_worker(w, signal.SIGKILL)
            if w.proc is not None:
                w.proc.wait()
            self._release_worker(w)
        for w in added:
            iface = self.interface(w.plan.netdev)
            if iface not in added_ifaces and w.plan.queue in iface.queues:
                iface.program.set_queue(w.plan.queue, owned=False)
                iface.queues.remove(w.plan.queue)
        for iface in added_ifaces:
            self._remove_interface(iface)

    def _drain(self, removing: list[Worker]) -> None:
        """Take removed workers' queues back from them and let them finish
        (datapath/worker.py: the two drain steps), then give their slots back."""
        self._close_queues(removing, disown=True)
        for w in removing:
            iface = self.interface(w.plan.netdev)
            if w.plan.queue in iface.queues:
                iface.queues.remove(w.plan.queue)
            w.transition(WorkerState.DRAINING)
        live = [w for w in removing if w.proc is not None and w.proc.poll() is None]
        # step 1: each RX ring stays empty (nothing more comes from the wire)
        for w in live:
            self.signal(w.proc, signal.SIGUSR1)
        self._wait_until(live, lambda w: w.proc.poll() is not None or
                         self._worker_reports(w) == _fastpath.STATE_DRAINING, "drain RX")
        # step 2: nobody being removed receives anything any more: finish
        for w in live:
            if w.proc.poll() is None:
                self.signal(w.proc, signal.SIGUSR2)
        self._wait_until(live, lambda w: w.proc.poll() is not None, "finish")
        for w in removing:
            if w.proc is not None and w.proc.poll() is None:
                log.warning("%s: did not drain within %.0f s; killing it", w.name,
                            DRAIN_TIMEOUT_S)
                self.signal(w.proc, signal.SIGKILL)
            if w.proc is not None:
                self._wait_gone(w)
            self._release_worker(w)
            log.info("%s: removed", w.name)

    def _wait_gone(self, w: Worker) -> None:
        """Reap w's process after a SIGKILL; one that could not be sent one
        is left to its parent-death signal (the supervisor's exit)."""
        if w.proc.pid in self._unsignallable:
            log.error("%s: pid %d could not be signalled; left to end with the supervisor",
                      w.name, w.proc.pid)
            return
        try:
            w.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("%s: pid %d still running after SIGKILL; left behind", w.name,
                      w.proc.pid)

    def _wait_until(self, workers: list[Worker], done, what: str) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        pending = list(workers)
        while pending and time.monotonic() < deadline:
            pending = [w for w in pending if not done(w)]
            if pending:
                time.sleep(0.002)
        if pending:
            log.warning("%s: %s not done within %.0f s", ", ".join(w.name for w in pending),
                        what, DRAIN_TIMEOUT_S)

    def _release_worker(self, w: Worker) -> None:
        """Close a stopped worker's socket and give its slot back, unless
        some of its frames are still elsewhere (then the slot stays unused
        until restart, and the log says so)."""
        w.proc = None
        w.transition(WorkerState.STOPPED)
        if w in self.workers:
            self.workers.remove(w)
        self.dismiss_standby(w)
        self._close_direct(w)
        w.socket.close()
        try:
            self.umem.control.reset_worker(w.id)
        except ValueError as e:
            self.quarantined.add(w.id)
            log.warning("worker slot %d (%s) not reused until restart: %s", w.id, w.name, e)
            return
        self.free_slots.append(w.id)
        self.free_slots.sort()
        self._snapshots.forget(w.id)          # a new worker in the slot starts its own rates
        for h in self.hosting.removed(w, self.workers):
            self.dismiss_standby(h)           # it holds w's socket; the next one will not

    def _close_direct(self, w: Worker) -> None:
        """w is gone: its own direct sockets close (what they sent stays
        counted, as its egress queues' transmissions), and so does every
        other worker's copy of a socket on w's queue (the worker closes its
        own once nothing of it is out; its standby holds one too, and is
        replaced).  Then w's queue can be bound again."""
        stats = self.umem.control.worker_stats(w.id)
        for j, d in enumerate(w.direct):
            carried = self.direct_carried.setdefault(d.owner, [0, 0])
            carried[0] += stats["direct_packets"][j]
            carried[1] += stats["direct_bytes"][j]
            d.close()
        self.direct_carried.pop(w.id, None)
        for x in self.workers:
            onto_w = [d for d in x.direct if d.owner == w.id and d.socket is not None]
            for d in onto_w:
                d.close()
            if onto_w:
                self.dismiss_standby(x)
