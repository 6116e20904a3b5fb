# Trellis: developer and CI entry points.
#
#   make deps-system   Debian packages the tests and the benchmark need (apt-get, idempotent)
#   make venv          .venv with the project installed editable, extras [test,dev]
#   make lint          ruff check, ruff format --check, mypy, lint-imports
#   make test          deps-system + venv + lint + pytest (PYTEST_ARGS, default: a worker per core)
#   make run           kernel run -c config/default.toml
#   make bench         bench/run.py (BENCH_ARGS="--duration 5 --only nginx" to narrow it)
#   make bench-h2      bench/run_h2.py: h2load against Trellis and nginx (h2c, TLS)
#   make bench-lb      bench/run_lb.py: config/lb.toml over two backends vs config/reverse.toml
#   make bench-instructions  bench/server_instructions.py: instructions per request of the
#                      running server under callgrind, HTTP/1.1 and h2c (~8 minutes)
#   make bench-ab BENCH_ARGS="HEAD~1 HEAD"  bench/ab.py: two builds in alternating runs
#   make clean         caches and run-time output (keeps .venv; `make distclean` drops it too)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
# The targets share .venv and apt's lock: never run them in parallel.
.NOTPARALLEL:

# The interpreter .venv is made from. The distribution's /usr/bin/python3 is
# preferred when it can make a venv: Debian builds CPython with PGO and LTO,
# and a pyenv build first on PATH usually has neither (pyenv configures
# without --enable-optimizations unless asked), which costs the proxy 10-18%
# of its speed (docs/benchmarks.md, "The interpreter"). `make PYTHON=...`
# picks another; a .venv made from a different interpreter is made again.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' \
  >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.stamp
PIP_EXTRAS := test,dev

# Debian packages, as PACKAGE or PACKAGE:COMMAND. With a COMMAND the package
# counts as present when that command is on PATH (so a differently packaged
# nginx is fine); otherwise dpkg must report it installed. Later issues add
# here, e.g. redis-server:redis-server postgresql nghttp2-client:h2load
# tshark:tshark chromium:chromium.
SYSTEM_PACKAGES := python3-venv curl:curl wrk:wrk nginx-light:nginx util-linux:taskset nghttp2-client:h2load openssl:openssl valgrind:valgrind postgresql

# sudo only when we are not root and sudo exists (CI runs as root).
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)

BENCH_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: deps-system venv lint test run bench bench-h2 bench-lb bench-instructions bench-ab clean distclean

# Installs only what is missing; `apt-get update` runs once, only then. RUNLEVEL=1
# keeps packaged services (nginx now, redis/postgresql later) from being started:
# the tests and the benchmark start their own, on loopback ports of their own.
deps-system:
	@export PATH="$$PATH:/usr/local/sbin:/usr/sbin:/sbin"; \
	missing=""; \
	for spec in $(SYSTEM_PACKAGES); do \
	  pkg="$${spec%%:*}"; cmd=""; \
	  case "$$spec" in *:*) cmd="$${spec#*:}";; esac; \
	  if [ -n "$$cmd" ] && command -v "$$cmd" >/dev/null 2>&1; then continue; fi; \
	  if dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'install ok installed'; then continue; fi; \
	  missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then \
	  echo "deps-system: all present ($(SYSTEM_PACKAGES))"; \
	else \
	  echo "deps-system: installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends \
	    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $$missing </dev/null; \
	fi

# .venv is made again when it was made from another interpreter than $(PYTHON).
venv:
	@want="$$($(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))')"; \
	have="$$(sed -n 's/^executable = //p' $(VENV)/pyvenv.cfg 2>/dev/null || true)"; \
	if [ -n "$$have" ] && [ "$$(readlink -f "$$have")" != "$$want" ]; then \
	  echo "venv: $(VENV) was made from $$have; making it again from $$want"; \
	  rm -rf $(VENV); \
	fi
	@$(MAKE) --no-print-directory $(VENV_STAMP)

# Re-run only when pyproject.toml changes (or the venv is gone).
$(VENV_STAMP): pyproject.toml
	@if [ ! -x "$(VENV_PY)" ]; then \
	  echo "venv: creating $(VENV) with $$($(PYTHON) --version 2>&1)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(VENV_PY) -m pip install -q --upgrade pip
	$(VENV_PY) -m pip install -q -e '.[$(PIP_EXTRAS)]'
	@touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# pytest's own exit code is make's: 1 = failures, 5 = no tests collected.
# The suite runs on one pytest-xdist worker per core, at most four: most of
# its time is spent waiting on sockets and child processes, so two workers on
# a 2-core VM take 4.6 minutes against 7.5 for one (four on the same two
# cores: 5.1). `make test PYTEST_ARGS=` runs it in one process; a single
# test file is quicker without workers: `.venv/bin/pytest tests/kernel`.
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist worksteal
test: deps-system venv lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: venv
	$(VENV)/bin/kernel run -c config/default.toml

bench: deps-system venv
	$(VENV_PY) bench/run.py $(BENCH_ARGS)

bench-h2: deps-system venv
	$(VENV_PY) bench/run_h2.py $(BENCH_ARGS)

bench-lb: deps-system venv
	$(VENV_PY) bench/run_lb.py $(BENCH_ARGS)

bench-instructions: deps-system venv
	$(VENV_PY) bench/server_instructions.py $(BENCH_ARGS)

bench-ab: deps-system venv
	$(VENV_PY) bench/ab.py $(BENCH_ARGS)

clean:
	rm -rf bench/.work .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache \
	  build dist logs
	find . -path ./.venv -prune -o -name '*.egg-info' -prune -exec rm -rf {} + \
	  -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
