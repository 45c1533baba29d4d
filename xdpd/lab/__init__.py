"""The lab: throw-away veth namespaces, a daemon driven from outside,
traffic generators and sinks, and `xdpd demo`.

It owns everything xdpd needs to show itself and to be tested or measured
on one machine (netns, daemon, traffic, xdp: the BPF generator and counting
sink in bpf/lab.c, built as lab.bpf.o next to it; demo).  It must never be
imported by the daemon's own modules: the product runs without it, and a
test (tests/unit/test_layering.py) holds that line.  Only the CLI's `demo`
command reaches it, at the moment that command runs.
"""
