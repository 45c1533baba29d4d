"""The data plane: a worker process (worker.py), the shared UMEM and
control area (umem.py) and the C fast path (_fastpath.c and its units).
A worker gets a frozen spec and open descriptors, never the YAML."""
