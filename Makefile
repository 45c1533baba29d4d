# xdpd — two commands matter:
#   make demo   install what is missing, build, run xdpd in a throw-away veth lab
#   make test   every test tier (unit, bpf, integration)
# Both need root (apt, XDP, network namespaces).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := clang llvm libbpf-dev libbpf1 gcc make python3-dev python3-venv \
                linux-libc-dev iproute2 ethtool util-linux procps prometheus strace \
                iputils-ping iperf3 curl libpcap0.8 tcpdump
# The benchmark's peers: dpdk-testpmd with the AF_XDP PMD, and libxdp for
# bench/xsk_fwd.c (not needed by tests).
BENCH_APT_PACKAGES := dpdk-dev libxdp-dev
# The CPU hog of `make test-loaded`.
LOADED_APT_PACKAGES := stress-ng
PYTEST_ARGS ?=
DEMO_SECONDS ?= 5
BENCH_ARGS ?=
SOAK_ARGS ?=
FUZZ_ARGS ?=

# Benchmarks report numbers and are not part of `make test`.
.PHONY: all deps bench-deps loaded-deps venv build demo test test-loaded bench bench-clients bench-micro \
        fuzz soak test-unit test-bpf test-integration clean install install-lab uninstall

all: build

# System packages: only those missing, so a second run is quick and offline.
deps: PACKAGES = $(APT_PACKAGES)
bench-deps: PACKAGES = $(BENCH_APT_PACKAGES)
loaded-deps: PACKAGES = $(LOADED_APT_PACKAGES)
deps bench-deps loaded-deps:
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
	$(PY) setup_bpf.py bpf/lab.c xdpd/lab
	$(PY) testing/build.py >/dev/null

demo: build
	$(VENV)/bin/xdpd demo --seconds $(DEMO_SECONDS)

test: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/unit tests/bpf tests/integration

# The whole suite while one core is kept busy (stress-ng --cpu 1), as on a
# user's machine running a compiler or a browser beside it: tests assert
# behaviour and accounting, so they hold there too.
test-loaded: build loaded-deps
	@stress-ng --cpu 1 --quiet --timeout 7200 & hog=$$!; \
	trap 'kill $$hog 2>/dev/null' INT TERM; \
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/unit tests/bpf tests/integration; rc=$$?; \
	kill $$hog 2>/dev/null; wait $$hog 2>/dev/null; exit $$rc

test-unit: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/unit

test-bpf: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/bpf

test-integration: build
	$(PY) -m pytest -rs $(PYTEST_ARGS) tests/integration

# xdpd vs dpdk-testpmd vs in-kernel XDP forwarding in a veth lab (root); prints the table.
bench: build bench-deps bench/xsk_fwd
	$(PY) bench/perf.py $(BENCH_ARGS)

# The benchmark's C peer: a minimal AF_XDP forwarder on libxdp
bench/xsk_fwd: bench/xsk_fwd.c
	$(CC) -O2 -Wall -Wextra -o $@ $< -lxdp -lbpf

# xdpd at the highest rate for 30 minutes (root): memory, frames and drops over
# time, then a verdict; make soak SOAK_ARGS="--minutes 3 --every 15"
soak: build
	$(PY) bench/soak.py $(SOAK_ARGS)

# The C fast path alone on synthetic rings: Mpps per core; then the XDP
# program alone (root): ns per packet by what it does (rules, fanout).
# Real clients (ping, iperf3) through xdpd, a Linux bridge and in-kernel XDP
# redirect, side by side (root): make bench-clients CLIENTS_ARGS="--runs 5"
bench-clients: build bench-deps bench/xsk_fwd
	$(PY) bench/clients.py $(CLIENTS_ARGS)

bench-micro: build
	$(PY) bench/fastpath_micro.py
	$(PY) bench/xdp_program.py

# The C fast path built with AddressSanitizer and UBSan, fuzzed on synthetic
# rings (lying kernel and peers, workers killed mid-commit): 8 seeds x 3
# modes x 1 M steps, alone, in fanout groups of 2, with direct sockets, and
# with descriptor chains (copy mode's 18 descriptors a packet; 5, in fanout
# groups), a few minutes; not part of `make test` (a short run is).
# make fuzz FUZZ_ARGS="--seeds 1-40 --steps 5000000"
fuzz: build
	$(PY) tests/fuzz_fastpath.py --asan $(FUZZ_ARGS)
	$(PY) tests/fuzz_fastpath.py --asan --fanout 2 $(FUZZ_ARGS)
	$(PY) tests/fuzz_fastpath.py --asan --direct $(FUZZ_ARGS)
	$(PY) tests/fuzz_fastpath.py --asan --max-segs 18 $(FUZZ_ARGS)
	$(PY) tests/fuzz_fastpath.py --asan --max-segs 5 --fanout 2 $(FUZZ_ARGS)

clean:
	rm -rf build dist *.egg-info lab/build lab/*.egg-info xdpd/*/*.so xdpd/*/*.bpf.o testing/*.so \
	       .pytest_cache bench/xsk_fwd

# make install: xdpd on this host, run by systemd (root).
# Debian's Python is externally managed (PEP 668): the package, its C
# extension and XDP object (built by `pip install .`: needs what `make deps`
# installs, clang and libbpf-dev among it) and its PyPI dependencies go into
# a virtualenv of their own; $(PREFIX)/bin/xdpd links to its command.
# DESTDIR is not supported: a virtualenv records its absolute path in its
# scripts, so one built under a staging root would not run once moved.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
# /etc/systemd/system: units the administrator installs; /lib/systemd/system
# belongs to packages, where dpkg would not know this file.
UNITDIR    ?= /etc/systemd/system
XDPD_VENV  := $(PREFIX)/lib/xdpd/venv
XDPD_SHARE := $(PREFIX)/share/xdpd
XDPD_DOC   := $(PREFIX)/share/doc/xdpd
XDPD_CONF  := $(SYSCONFDIR)/xdpd/xdpd.yaml
# Reload systemd's view of the units only where systemd is the running init.
SYSTEMD_RELOAD = if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

install:
	@if [ -n "$(DESTDIR)" ]; then \
	  echo "make install: DESTDIR is not supported (the virtualenv cannot be moved)" >&2; \
	  exit 2; fi
	$(PYTHON) -m venv --clear $(XDPD_VENV)
	rm -rf build            # setuptools packs whatever an earlier build left there
	$(XDPD_VENV)/bin/python -m pip install -q --disable-pip-version-check $(CURDIR)
	install -d $(PREFIX)/bin
	ln -sfn $(XDPD_VENV)/bin/xdpd $(PREFIX)/bin/xdpd
	install -d $(UNITDIR)
	sed -e 's#/usr/local/#$(PREFIX)/#g' -e 's#/etc/xdpd/#$(SYSCONFDIR)/xdpd/#g' \
	    deploy/systemd/xdpd.service > $(UNITDIR)/xdpd.service
	chmod 0644 $(UNITDIR)/xdpd.service
	rm -rf $(XDPD_SHARE) $(XDPD_DOC)
	install -d $(XDPD_SHARE) $(XDPD_DOC)
	install -m 0644 config/xdpd.yaml $(XDPD_SHARE)/xdpd.yaml.example
	cp -R deploy/grafana deploy/prometheus $(XDPD_SHARE)/
	install -m 0644 README.md docs/*.md $(XDPD_DOC)/
	install -d -m 0755 $(SYSCONFDIR)/xdpd
# An operator's configuration is never overwritten.
	@if [ -e $(XDPD_CONF) ]; then \
	  echo "kept $(XDPD_CONF); the shipped example is $(XDPD_SHARE)/xdpd.yaml.example"; \
	else \
	  install -m 0644 config/xdpd.yaml $(XDPD_CONF) && \
	  echo "installed $(XDPD_CONF): an example, edit it (xdpd check-config $(XDPD_CONF))"; \
	fi
	@$(SYSTEMD_RELOAD)

# Stop and disable the service first (systemctl disable --now xdpd).
# The lab (`xdpd demo`, the veth harness) is an extra: its own distribution
# (lab/), installed into the same virtualenv after `make install`.
install-lab:
	@[ -x $(XDPD_VENV)/bin/python ] || { echo "make install-lab: run make install first" >&2; exit 2; }
	rm -rf lab/build
	$(XDPD_VENV)/bin/python -m pip install -q --disable-pip-version-check $(CURDIR)/lab

uninstall:
# The configuration goes only if it is still the shipped example.
	@shipped=$(XDPD_SHARE)/xdpd.yaml.example; [ -e $$shipped ] || shipped=config/xdpd.yaml; \
	if [ -e $(XDPD_CONF) ]; then \
	  if cmp -s $(XDPD_CONF) $$shipped; then \
	    rm -f $(XDPD_CONF); rmdir $(SYSCONFDIR)/xdpd 2>/dev/null || true; \
	  else \
	    echo "kept $(XDPD_CONF): it differs from the shipped example"; \
	  fi; \
	fi
# Only our own link: another xdpd in $(PREFIX)/bin is left alone.
	@if [ "$$(readlink $(PREFIX)/bin/xdpd)" = "$(XDPD_VENV)/bin/xdpd" ]; then \
	  rm -f $(PREFIX)/bin/xdpd; fi
	rm -f $(UNITDIR)/xdpd.service
	rm -rf $(PREFIX)/lib/xdpd $(XDPD_SHARE) $(XDPD_DOC)
	@$(SYSTEMD_RELOAD)
