"""Build hooks: the C fast path (a CPython extension) and the XDP object.

The XDP program is compiled here, once, by the package build (never at
daemon start), into the package that loads it (xdpd/kernel), so that an
installed `xdpd` finds it next to the module that needs it.  The lab and
its BPF object are not part of this distribution: lab/ builds them as the
extra `xdpd-lab` (setup_bpf.py compiles for both).
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from setup_bpf import compile_bpf  # noqa: E402


class BuildWithBpf(build_ext):
    """build_ext that also compiles bpf/rr_redirect.c with clang -target bpf."""

    def run(self):
        super().run()
        outdir = os.path.join(HERE if self.inplace else self.build_lib, "xdpd", "kernel")
        compile_bpf(os.path.join(HERE, "bpf", "rr_redirect.c"), outdir, self.announce)


setup(
    ext_modules=[
        Extension(
            "xdpd.datapath._fastpath",
            sources=["xdpd/datapath/_fastpath.c"],
            include_dirs=["bpf", "xdpd/datapath"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-std=gnu11"],
            # _fastpath.c is the one translation unit: it includes the others
            depends=[*("xdpd/datapath/" + f for f in (
                "fastpath.h", "ring.h", "parse.h", "cbpf.h", "layout.h", "table.c", "control.c",
                "port.h", "commit.c", "frames.c", "direct.c", "capture.c", "capctl.c", "rx.c",
                "chain.c", "loop.c", "port.c", "hosting.c")),
                "bpf/rr_redirect.h"],
        ),
        Extension(
            "xdpd.kernel._confine",
            sources=["xdpd/kernel/confine.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-std=gnu11"],
        ),
    ],
    cmdclass={"build_ext": BuildWithBpf},
)
