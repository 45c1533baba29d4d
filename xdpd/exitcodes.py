"""Named exit codes (sysexits.h where one fits).

A configuration error is not a crash: systemd's unit lists CONFIG in
RestartPreventExitStatus so a bad file does not restart-loop.
"""
OK = 0
FAILURE = 1            # a runtime failure after start-up
USAGE = 64             # EX_USAGE: bad command line
CONFIG = 78            # EX_CONFIG: the configuration is invalid for this host
OSERR = 71             # EX_OSERR: the kernel refused a setup step
SOFTWARE = 70          # EX_SOFTWARE: a bug
NOPERM = 77            # EX_NOPERM: not root / missing capability
UNAVAILABLE = 69       # EX_UNAVAILABLE: no xdpd answers on the control socket

DOCTOR_WARNINGS = 6        # xdpd doctor: the worst finding is a warning
DOCTOR_ERRORS = 7          # xdpd doctor: at least one error

WORKER_BOOT_FAILED = 3     # a worker could not map its rings: do not count as a crash loop
WORKER_ORPHANED = 4        # the supervisor died before the worker settled
WORKER_PRIVILEGES = 5      # a worker could not drop its capabilities: it must not run with them
