"""The control plane: the supervisor and everything around it (start-up,
recovery, reload, steering, snapshot, metrics, control socket, systemd,
doctor).  Never touches a packet; reaches the OS through control/ops.py
and the kernel plane."""
