"""`xdpd run`: the daemon in the foreground (what the systemd unit starts).

Loads the configuration against this host, raises the descriptor limit,
starts the supervisor and runs its loop until SIGTERM; every failure ends
in one logged line and a named exit code.
"""
from __future__ import annotations

import logging
import resource

from xdpd import exitcodes
from xdpd.cli import need_root
from xdpd.config.model import ConfigError
from xdpd.config.schema import load_config
from xdpd.control.ops import SetupError, StopRequested
from xdpd.control.sdnotify import Notifier
from xdpd.control.supervisor import Supervisor
from xdpd.kernel.libbpf import BpfError
from xdpd.kernel.netdev import Host
from xdpd.kernel.xsk import XskError

log = logging.getLogger("xdpd")

FD_LIMIT = 65536


def raise_fd_limit() -> None:
    """Descriptor headroom for the supervisor: its sockets, memfds, eventfds,
    pipes to standbys and clients (metrics and control connections are
    capped, so these are margin, not a defence).  The soft limit goes up to
    FD_LIMIT, within the hard limit (the unit's LimitNOFILE=)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, want, e)


def command(args) -> int:
    denied = need_root("run")
    if denied is not None:
        return denied
    try:
        config = load_config(args.config, Host())
    except ConfigError as e:
        for line in str(e).splitlines():
            log.error("%s", line)
        return exitcodes.CONFIG
    raise_fd_limit()
    sup = Supervisor(config, notifier=Notifier.from_env())
    # Before start(): SIGTERM's default action would kill xdpd mid-way with
    # its XDP programs attached.
    sup.install_signal_handlers()
    try:
        sup.start()
    except StopRequested:
        log.info("stopped during start-up; everything it set up is undone")
        return exitcodes.OK
    except ConfigError as e:
        log.error("%s", e)
        return exitcodes.CONFIG
    except SetupError as e:
        log.error("%s", e)
        return e.code
    except (BpfError, XskError, OSError) as e:
        log.error("start-up failed: %s", e)
        return exitcodes.OSERR
    try:
        sup.run_forever()
    finally:
        log.info("stopping")
        sup.stop()
    log.info("stopped; XDP programs detached, sockets closed")
    return exitcodes.OK
