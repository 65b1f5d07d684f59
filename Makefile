# worm-testbed: `make demo` and `make test` set everything up from scratch on Debian/Ubuntu (as root).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VMSTAMP := $(VENV)/.installed-vm

.PHONY: setup setup-vm system venv test test-fast demo lint bench clean help

help:
	@echo "make demo     - set up for namespaces, then run the main job on the namespace provider"
	@echo "make test     - set up for namespaces and VMs, then run the whole test suite"
	@echo "make setup    - install the missing Debian packages namespaces need, and the .venv (idempotent)"
	@echo "make setup-vm - also libvirt, QEMU, mmdebstrap and libvirt-python; says what it changes first"
	@echo "make lint     - ruff, ansible-lint (production profile), mypy"
	@echo "make bench    - run every benchmark in benchmarks/"

# namespaces only: what `make demo` needs (no libvirt, no QEMU, nothing in /etc/libvirt)
setup: system venv

system:
	@scripts/setup-system.sh

# VMs (the libvirt provider): Debian packages, daemons, and the binding in the venv
setup-vm: setup $(VMSTAMP)

$(VMSTAMP): $(STAMP)
	@scripts/setup-libvirt.sh
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,vm]' >$(VENV)/pip-vm.log 2>&1 \
		|| { cat $(VENV)/pip-vm.log; echo "setup-vm: pip install failed (log: $(VENV)/pip-vm.log)"; exit 1; }
	@touch $(VMSTAMP)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "worm-testbed needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' >$(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; echo "setup: pip install failed (log: $(VENV)/pip.log)"; exit 1; }
	@$(PY) -c 'import orchestrator, netfilterqueue, pyroute2, ansible_runner' 
	@touch $(STAMP)

test: setup-vm
	$(PY) -m pytest -q --durations=25

test-fast: venv
	$(PY) -m pytest -q -m 'not slow'

demo: setup
	@scripts/demo.sh

lint: venv
	$(PY) -m ruff check orchestrator testworm throttle mechanisms hostagent workload tests benchmarks playbooks/library
	cd playbooks && ../$(VENV)/bin/ansible-lint --nocolor -q
	cd playbooks && ../$(VENV)/bin/ansible-lint --nocolor -q ../mechanisms/trw/role ../mechanisms/ratelimit/role
	$(PY) -m mypy

bench: setup-vm
	@scripts/setup-system.sh mininet bridge-utils   # the lab benchmark compares with Mininet 2.3
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
