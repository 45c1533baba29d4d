"""How xdpd's BPF objects are compiled, for both distributions' builds
(setup.py: the daemon's rr_redirect; lab/setup.py: the lab's) and for
`make build`, which puts the lab's next to its sources in a checkout:

    python setup_bpf.py bpf/lab.c xdpd/lab
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


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


def compile_bpf(src: str, outdir: str, announce=None) -> str:
    """bpf/NAME.c -> outdir/NAME.bpf.o with clang -target bpf; the path."""
    clang = os.environ.get("CLANG", shutil.which("clang"))
    if not clang:
        raise SystemExit("building xdpd needs clang for its XDP programs "
                         "(Debian: apt-get install clang libbpf-dev)")
    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, os.path.splitext(os.path.basename(src))[0] + ".bpf.o")
    cmd = [clang, "-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
           *multiarch_include(), "-I", os.path.join(HERE, "bpf"), "-c", src, "-o", out]
    if announce:
        announce(" ".join(cmd), level=2)
    subprocess.run(cmd, check=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: setup_bpf.py SOURCE.c OUTDIR")
    compile_bpf(sys.argv[1], sys.argv[2])
