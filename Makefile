# Two entry points, both idempotent and safe to run on a fresh machine as root:
#   make demo  - create .venv, install corral, run the demo job on this machine
#   make test  - install the Debian packages and the venv the tests need, then run pytest (all but `long` tests)
#   make test-long - the tests marked `long` (minutes each, e.g. the 32-node scale tests); CI runs them after make test
#   make lint  - ruff (lint and format check), the import contracts (lint-imports), the architecture test
# GPU acceptance (docs/GPU_CHECK.md):
#   make gpu-bundle - on a machine with registry access: the wheels and tmux packages a bare GPU machine lacks
#   make gpu-check  - on the GPU machine: install from the bundle without a network, then prove every GPU path
#                     (perf/gpu_check.sh; without a bundle it runs from .venv; GPU_CHECK_ARGS=--cpu-only: CPU path only)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned: an unpinned install would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
DEBS := tmux openssh-server openssh-client iproute2 iptables docker.io fio e2fsprogs procps util-linux kmod slurmctld slurmd slurm-client munge chromium pdsh
PYTEST_ARGS ?=
# Workers for `make test` (pytest-xdist), each handed its next test when it finishes one (modules with a slow test
# first: tests/conftest.py). The suite is bound by the machine's CPU (most of it torch starting in ranks and torchrun
# agents): three workers took 589-633 s, four 592 s, the cores busy throughout; in the VM's slower state (torch's
# import 2.8 CPU-s against 2.0) 971-1031 s. Figures: docs/results/simcluster.md.
PYTEST_WORKERS ?= 3
GPU_BUNDLE ?= .gpu-bundle
GPU_VENV ?= .gpu-venv
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
OUT ?=

.PHONY: demo test test-long lint venv debs clean-venv gpu-bundle gpu-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test,plot,lint]"
	touch $@

venv: $(VENV)/.installed

debs:
	@if dpkg -s $(DEBS) >/dev/null 2>&1; then echo "Debian packages present: $(DEBS)"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBS); fi

demo: venv
	$(VENV)/bin/corral demo

# `long` tests run in a step of their own, so that `make test` stays short (docs/SIMCLUSTER.md, "Test time").
# --tb=native: pytest's own traceback format parses each file's source with `ast`, and CPython 3.11 can fail
# there ("AST constructor recursion depth mismatch", python/cpython#106905), which turned one failed test into
# an INTERNALERROR that ended the whole run.
# The tests' Python processes keep their bytecode (`__pycache__/`, ignored by git): with PYTHONDONTWRITEBYTECODE
# set, as some CI images set it, every launcher, agent and rank process compiled corral's modules again.
test: debs venv
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -m "not long" -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1 --tb=native $(PYTEST_ARGS)

# Exit status 5 is pytest's "no test selected": no `long` test is not a failure.
test-long: debs venv
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -m long --tb=native $(PYTEST_ARGS) || test $$? -eq 5

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

clean-venv:
	rm -rf $(VENV)

gpu-bundle:
	perf/gpu_bundle.sh $(GPU_BUNDLE)

gpu-check:
	GPU_BUNDLE=$(GPU_BUNDLE) GPU_VENV=$(GPU_VENV) GPU_PYTHON=$(GPU_PYTHON) OUT="$(OUT)" perf/gpu_check.sh $(GPU_CHECK_ARGS)
