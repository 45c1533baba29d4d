"""Build hooks: the C fast path (a CPython extension) and the XDP object.

The XDP program is compiled here, once, by the package build (never at
daemon start).  Each artefact lands inside the package that loads it (the
lab's generator in `xdpd.lab`), so that an installed `xdpd` finds it next
to the module that needs it.
"""
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
# each BPF object lands in the package directory named with it
BPF_SOURCES = [("bpf/rr_redirect.c", "xdpd/kernel"), ("bpf/lab.c", "xdpd/lab")]


def multiarch_include():
    """Debian keeps asm/types.h under /usr/include/<triplet>; clang -target bpf
    does not look there by itself."""
    try:
        triplet = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        triplet = ""
    path = os.path.join("/usr/include", triplet) if triplet else ""
    return [f"-I{path}"] if path and os.path.isdir(path) else []


class BuildWithBpf(build_ext):
    """build_ext that also compiles bpf/*.c with clang -target bpf."""

    def run(self):
        super().run()
        clang = os.environ.get("CLANG", shutil.which("clang"))
        if not clang:
            raise SystemExit("building xdpd needs clang for the XDP program "
                             "(Debian: apt-get install clang libbpf-dev)")
        for src, package in BPF_SOURCES:
            outdir = os.path.join(HERE if self.inplace else self.build_lib, package)
            os.makedirs(outdir, exist_ok=True)
            name = os.path.splitext(os.path.basename(src))[0] + ".bpf.o"
            out = os.path.join(outdir, name)
            cmd = [clang, "-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
                   *multiarch_include(), "-I", os.path.join(HERE, "bpf"),
                   "-c", os.path.join(HERE, src), "-o", out]
            self.announce(" ".join(cmd), level=2)
            subprocess.run(cmd, check=True)


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
                "fastpath.h", "ring.h", "parse.h", "layout.h", "table.c", "control.c",
                "port.h", "commit.c", "frames.c", "direct.c", "rx.c", "loop.c", "port.c")),
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
