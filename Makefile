# xdpd — two commands matter:
#   make demo   install what is missing, build, run xdpd in a throw-away veth lab
#   make test   every test tier (unit, bpf, integration)
# Both need root (apt, XDP, network namespaces).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := clang llvm libbpf-dev libbpf1 gcc make python3-dev python3-venv \
                linux-libc-dev iproute2 ethtool util-linux procps
# The benchmark's peer, dpdk-testpmd with the AF_XDP PMD (not needed by tests).
BENCH_APT_PACKAGES := dpdk-dev
PYTEST_ARGS ?=
DEMO_SECONDS ?= 5
BENCH_ARGS ?=

# Benchmarks report numbers and are not part of `make test`.
.PHONY: all deps bench-deps venv build demo test bench bench-micro test-unit test-bpf \
        test-integration clean

all: build

# System packages: only those missing, so a second run is quick and offline.
deps bench-deps: PACKAGES = $(if $(filter bench-deps,$@),$(BENCH_APT_PACKAGES),$(APT_PACKAGES))
deps bench-deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The package (C extension + XDP object built by its own build) in a
# virtualenv under the repo, editable so tests run the working tree.
$(PY): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	touch $(PY)

$(VENV)/.installed: $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: deps $(VENV)/.installed

# Rebuild the extension and the XDP object in place after source edits.
build: venv
	$(PY) setup.py -q build_ext --inplace

demo: build
	$(VENV)/bin/xdpd demo --seconds $(DEMO_SECONDS)

test: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/unit tests/bpf tests/integration

test-unit: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/unit

test-bpf: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/bpf

test-integration: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/integration

# xdpd vs dpdk-testpmd vs in-kernel XDP forwarding in a veth lab (root); prints the table.
bench: build bench-deps
	$(PY) bench/perf.py $(BENCH_ARGS)

# The C fast path alone on synthetic rings: Mpps per core.
bench-micro: build
	$(PY) bench/fastpath_micro.py

clean:
	rm -rf build dist *.egg-info xdpd/*.so xdpd/*.bpf.o .pytest_cache
