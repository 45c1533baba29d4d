"""xdpd: an AF_XDP packet forwarding daemon.

One supervisor owns the kernel objects; one pinned worker per (netdev, queue)
moves packets through a shared UMEM.
"""

__version__ = "0.1.0"
