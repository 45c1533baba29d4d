"""`xdpd top`: per-queue rates and drops of the running daemon, refreshed in
place like top(1).  q, Q, Esc or Ctrl-C quits; space refreshes now.

It asks the control socket for `status` every interval and draws the answer.
render() is pure (a status in, screen lines out) so the layout is tested
without a terminal; the curses loop only fetches, renders and draws.

Columns, one row per worker (netdev/queue order) and a TOTAL row:

    RX/s TX/s DROP/s  the daemon's own rates (its counters over its window)
    KDROP/s           packets the kernel dropped before the socket saw them
                      (XDP_STATISTICS rx_dropped + rx_ring_full), per second
                      between two refreshes of this view
    FILL-E/s          times the kernel found the FILL ring empty, per second:
                      the worker is not giving frames back fast enough
    RST               restarts of the worker
    DROPS SINCE START the daemon's drops by cause, counted since the
                      supervisor started, and the kernel's, since the socket
                      was made; causes at zero are left out

If the daemon cannot be reached the view says so and keeps asking, so it
can stay open across a daemon restart.  Without a terminal (a pipe, a file)
it prints one frame and exits, as with once=True.
"""
from __future__ import annotations

import curses
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable

from xdpd import exitcodes

Fetch = Callable[[], dict]

QUIT_KEYS = frozenset({ord("q"), ord("Q"), 27})      # 27: Esc
REFRESH_KEYS = frozenset({ord(" "), curses.KEY_REFRESH})

# Short names for the drop causes in the compact column; a cause a newer
# daemon adds is shown under its own name.
CAUSE_NAMES = {"no_rule": "norule", "rule": "rule", "invalid": "inval",
               "egress_down": "egdown", "too_long": "long", "chain_invalid": "chain"}
KERNEL_DROP_FIELDS = ("rx_dropped", "rx_ring_full")
FILL_EMPTY_FIELD = "rx_fill_ring_empty_descs"

UNLIMITED = 1 << 30        # width or height of a frame printed, not drawn
RESIZE_CHECK_S = 0.25      # longest a resize waits for its redraw
# Keys are not read while a request waits: a daemon busy with a long reload
# must not keep q from quitting, so the view gives up soon and asks again.
STATUS_TIMEOUT_S = 2.0


# -- formatting ---------------------------------------------------------------

def human(value: float | int | None) -> str:
    """A rate or count in at most five characters: 950, 12.3k, 123k, 1.5M."""
    if value is None:
        return "-"
    x = float(value)
    if abs(x) < 999.5:
        return f"{x:.0f}"
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        v = x / scale
        if abs(v) < 99.95:
            return f"{v:.1f}{unit}"
        if abs(v) < 999.5:
            return f"{v:.0f}{unit}"
    return f"{x / 1e12:.1f}T"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _kernel_drops(worker: dict) -> int | None:
    # An empty xsk object means the supervisor could not read the socket's
    # statistics this time: unknown, not zero.
    xsk = worker.get("xsk") or {}
    if not all(f in xsk for f in KERNEL_DROP_FIELDS):
        return None
    return sum(int(xsk[f]) for f in KERNEL_DROP_FIELDS)


def _fill_empty(worker: dict) -> int | None:
    xsk = worker.get("xsk") or {}
    return int(xsk[FILL_EMPTY_FIELD]) if FILL_EMPTY_FIELD in xsk else None


def _rate(now: int | None, before: int | None, elapsed: float) -> float | None:
    # A counter that went down belongs to a new socket (the worker's queue
    # was re-created by a reload): no rate until the next refresh.
    if now is None or before is None or elapsed <= 0 or now < before:
        return None
    return (now - before) / elapsed


def _causes(drops: dict, kernel: int | None) -> str:
    parts = [f"{CAUSE_NAMES.get(k, k)}:{human(v)}" for k, v in drops.items() if v]
    if kernel:
        parts.append(f"kern:{human(kernel)}")
    return " ".join(parts) or "-"


def _sum_known(values: list[float | int | None]) -> float | int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _worker_key(w: dict) -> tuple:
    queue = w.get("queue")
    return (str(w.get("netdev", "")), queue if isinstance(queue, int) else -1,
            str(w.get("name", "")))


# -- the frame ----------------------------------------------------------------

def render(status: dict, prev: dict | None, elapsed: float, width: int, height: int) -> list[str]:
    """The screen for one status answer: at most height lines of at most width
    characters.  prev is the answer of the previous refresh, elapsed seconds
    earlier; it gives the kernel's rates and may be None."""
    if prev is not None and prev.get("pid") != status.get("pid"):
        prev = None                 # a restarted daemon: its counters began again
    prev_workers = {w.get("name"): w for w in (prev or {}).get("workers") or []}
    workers = sorted(status.get("workers") or [], key=_worker_key)

    lines = _header(status, workers)
    lines.append("")

    rows, kdrop_rates, fill_rates = [], [], []
    for w in workers:
        before = prev_workers.get(w.get("name"))
        kdrop = _rate(_kernel_drops(w), _kernel_drops(before) if before else None, elapsed)
        fill = _rate(_fill_empty(w), _fill_empty(before) if before else None, elapsed)
        kdrop_rates.append(kdrop)
        fill_rates.append(fill)
        pid = w.get("pid")
        cpu = w.get("cpu")
        rows.append((str(w.get("name", "?")), str(w.get("state", "?")),
                     "-" if cpu is None else str(cpu), "-" if pid is None else str(pid),
                     human(w.get("rx_pps")), human(w.get("tx_pps")), human(w.get("drop_pps")),
                     human(kdrop), human(fill), str(w.get("restarts", 0)),
                     _causes(w.get("drops") or {}, _kernel_drops(w))))

    running = sum(w.get("state") == "running" for w in workers)
    causes: dict[str, int] = {}
    for w in workers:
        for k, v in (w.get("drops") or {}).items():
            causes[k] = causes.get(k, 0) + int(v)
    total = ("TOTAL", f"{running}/{len(workers)}", "", "",
             human(sum(float(w.get("rx_pps") or 0) for w in workers)),
             human(sum(float(w.get("tx_pps") or 0) for w in workers)),
             human(sum(float(w.get("drop_pps") or 0) for w in workers)),
             human(_sum_known(kdrop_rates)), human(_sum_known(fill_rates)),
             str(sum(int(w.get("restarts") or 0) for w in workers)),
             _causes(causes, _sum_known([_kernel_drops(w) for w in workers])))

    name_width = max([len("NAME")] + [len(r[0]) for r in rows] + [len(total[0])])

    def row(cells) -> str:
        name, state, cpu, pid, rx, tx, drop, kdrop, fill, rst, dropped = cells
        return (f"{name:<{name_width}} {state:<8} {cpu:>3} {pid:>7} {rx:>6} {tx:>6} "
                f"{drop:>6} {kdrop:>7} {fill:>8} {rst:>3}  {dropped}").rstrip()

    lines.append(row(("NAME", "STATE", "CPU", "PID", "RX/s", "TX/s", "DROP/s",
                      "KDROP/s", "FILL-E/s", "RST", "DROPS SINCE START")))
    # The header and the TOTAL row always show; the worker rows get what is left.
    room = height - len(lines) - 1
    if len(rows) > room:
        shown = max(0, room - 1)
        lines += [row(r) for r in rows[:shown]]
        lines.append(f"... +{len(rows) - shown} more (a taller window shows them)")
    else:
        lines += [row(r) for r in rows]
    lines.append(row(total))
    return [line[:width] for line in lines[:max(0, height)]]


def _header(status: dict, workers: list[dict]) -> list[str]:
    config = status.get("config") or {}
    first = (f"xdpd {status.get('version', '?')}  pid {status.get('pid', '?')}  "
             f"up {duration(status.get('uptime_seconds'))}  "
             f"{'ready' if status.get('ready') else 'NOT READY'}  "
             f"config generation {config.get('generation', '?')}  {config.get('path', '')}")

    last = status.get("last_reload")
    if last:
        at = last.get("at")
        when = time.strftime("%H:%M:%S", time.localtime(at)) if at is not None else "?"
        took = last.get("duration_seconds")
        second = (f"last reload: {last.get('result', '?')} at {when}"
                  + (f" in {took * 1e3:.0f} ms" if took is not None else "")
                  # A refused configuration's message has a line per error.
                  + (f": {' / '.join(str(last['message']).splitlines())}"
                     if last.get("message") else ""))
    else:
        second = "last reload: none since start"

    running = sum(w.get("state") == "running" for w in workers)
    umem = status.get("umem") or {}
    where = umem.get("frames_by_location") or {}
    third = (f"workers: {running}/{len(workers)} running  "
             f"umem: {umem.get('frames', '?')} frames x {umem.get('frame_size', '?')} B, "
             f"slots {umem.get('worker_slots_used', '?')}/{umem.get('worker_slots', '?')}; "
             "frames " + " ".join(f"{k} {v}" for k, v in where.items()))
    return [first.rstrip(), second, third]


def render_error(message: str, interval: float, width: int, height: int) -> list[str]:
    """The screen while the daemon does not answer."""
    lines = ["xdpd top: cannot get the daemon's status",
             "",
             *message.splitlines(),
             "",
             f"asking again every {interval:g} s; q quits"]
    return [line[:width] for line in lines[:max(0, height)]]


# -- running it ---------------------------------------------------------------

def _unreachable() -> tuple[type[BaseException], ...]:
    """What a fetch raises when the daemon cannot be asked."""
    try:
        from xdpd.control.server import ControlError
    except ImportError:
        return (OSError,)
    return (ControlError, OSError)


def control_fetch(socket_path: str) -> Fetch:
    from xdpd.control.server import request
    return lambda: request(socket_path, "status", timeout=STATUS_TIMEOUT_S)


def main(socket_path: str, interval: float, once: bool = False,
         fetch: Fetch | None = None) -> int:
    if not interval > 0:
        print(f"xdpd top: --interval must be more than 0, not {interval:g}", file=sys.stderr)
        return exitcodes.USAGE
    if fetch is None:
        fetch = control_fetch(socket_path)
    if not once and not (sys.stdin.isatty() and sys.stdout.isatty()):
        once = True                 # nothing to redraw in place, no keys to read
    if not once:
        try:
            curses.setupterm(fd=sys.stdout.fileno())
        except curses.error as e:
            print(f"xdpd top: this terminal cannot be drawn on ({e}); printing one frame",
                  file=sys.stderr)
            once = True
    if once:
        return _print_once(fetch)
    return _interactive(fetch, interval)


def _print_once(fetch: Fetch) -> int:
    try:
        status = fetch()
    except _unreachable() as e:
        print(f"xdpd top: {e}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    # On a terminal, lines fit its width; into a pipe they are whole.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else UNLIMITED
    print("\n".join(render(status, None, 0.0, width, UNLIMITED)))
    return exitcodes.OK


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated


def _interactive(fetch: Fetch, interval: float) -> int:
    # SIGTERM would otherwise leave the terminal without echo; raised as an
    # exception, curses.wrapper restores it on the way out.
    # Ctrl-C quits even when SIGINT came in ignored (a shell starts
    # background jobs so, and exec keeps it): Python then installs no
    # handler of its own, and the key would do nothing.
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        old = signal.signal(signal.SIGTERM, _raise_terminated)
        old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return curses.wrapper(_loop, fetch, interval)
    except (KeyboardInterrupt, _Terminated):
        return exitcodes.OK
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)
            signal.signal(signal.SIGINT, old_int)


def _loop(stdscr, fetch: Fetch, interval: float) -> int:
    try:
        curses.curs_set(0)
    except curses.error:
        pass                        # a terminal without an invisible cursor
    try:
        curses.set_escdelay(25)     # Esc alone quits now, not after a second
    except (AttributeError, curses.error):
        pass
    errors = _unreachable()
    status = prev = error = None
    polled_at = elapsed = 0.0
    next_poll = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= next_poll:
            try:
                answer = fetch()
            except errors as e:
                # Rates across the gap would mix two daemons' counters.
                status, prev, error = None, None, str(e)
            else:
                prev, elapsed = status, now - polled_at
                status, polled_at, error = answer, now, None
            next_poll = now + interval
            _draw(stdscr, status, prev, elapsed, error, interval)
        wait = min(next_poll - time.monotonic(), RESIZE_CHECK_S)
        stdscr.timeout(max(1, round(wait * 1000)))
        key = stdscr.getch()
        if key in QUIT_KEYS:
            return exitcodes.OK
        if key == curses.KEY_RESIZE or (key == -1 and _resized(stdscr)):
            _draw(stdscr, status, prev, elapsed, error, interval)
        elif key in REFRESH_KEYS:
            next_poll = time.monotonic()


def _resized(stdscr) -> bool:
    """Catch a resize ncurses missed, and fit its screen to the terminal.

    ncurses turns SIGWINCH into KEY_RESIZE only when the signal interrupts
    its wait for a key; one that lands while it draws, or between the draw
    and the wait, is kept until the next draw."""
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return False
    if (rows, cols) == stdscr.getmaxyx():
        return False
    curses.resizeterm(rows, cols)
    return True


def _draw(stdscr, status, prev, elapsed, error, interval) -> None:
    height, width = stdscr.getmaxyx()
    if status is None:
        lines = render_error(error or "", interval, width, height)
    else:
        lines = render(status, prev, elapsed, width, height)
    stdscr.erase()
    for y, line in enumerate(lines):
        try:
            stdscr.addstr(y, 0, line)
        except curses.error:
            pass                    # the bottom-right cell: written, cursor cannot advance
    stdscr.refresh()


def command(args) -> int:
    return main(args.socket, args.interval)
