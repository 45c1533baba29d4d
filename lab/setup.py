"""The lab as its own distribution (xdpd-lab): the `xdpd.lab` package and
its BPF object (bpf/lab.c), which the daemon's wheel does not carry.

Its sources stay in the daemon's tree (xdpd/lab, bpf/lab.c), where the
tests import them from a checkout; this build takes them from there.
Install it into the daemon's environment (`make install-lab`, or
`pip install ./lab` beside `pip install .`) for `xdpd demo`.
"""
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from setup_bpf import compile_bpf  # noqa: E402  (the daemon's build of its BPF objects)


class BuildWithBpf(build_py):
    """build_py that also compiles bpf/lab.c into the built xdpd/lab."""

    def run(self):
        super().run()
        compile_bpf(os.path.join(ROOT, "bpf", "lab.c"),
                    os.path.join(self.build_lib, "xdpd", "lab"), self.announce)


setup(package_dir={"xdpd.lab": os.path.relpath(os.path.join(ROOT, "xdpd", "lab"), HERE)},
      cmdclass={"build_py": BuildWithBpf})
