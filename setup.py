"""Build hooks: the C fast path (a CPython extension) and the XDP object.

The XDP program is compiled here, once, by the package build (never at
daemon start).  Both artefacts land inside the `xdpd` package so that an
installed `xdpd` finds them next to its own modules.
"""
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
BPF_SOURCES = ["bpf/rr_redirect.c", "bpf/lab.c"]


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
        outdir = os.path.join(HERE if self.inplace else self.build_lib, "xdpd")
        os.makedirs(outdir, exist_ok=True)
        for src in BPF_SOURCES:
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
            "xdpd._fastpath",
            sources=["xdpd/_fastpath.c"],
            include_dirs=["bpf", "xdpd"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-std=gnu11"],
            depends=["xdpd/fastpath.h", "bpf/rr_redirect.h"],
        ),
        Extension(
            "xdpd._confine",
            sources=["xdpd/confine.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-std=gnu11"],
        ),
    ],
    cmdclass={"build_ext": BuildWithBpf},
)
