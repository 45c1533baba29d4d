"""The kernel-facing plane: thin wrappers over libbpf, AF_XDP sockets, the
ethtool ioctl, netlink/sysfs facts, privileges and the seccomp filter.
They keep errno and hold no policy; they import nothing above them."""
