# worm-testbed: `make demo` and `make test` set everything up from scratch on Debian/Ubuntu (as root).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system venv test test-fast demo lint bench clean help

help:
	@echo "make demo   - set up, then run the main job on the namespace provider"
	@echo "make test   - set up, then run the whole test suite"
	@echo "make setup  - install missing Debian packages and the .venv (idempotent)"
	@echo "make lint   - ruff, ansible-lint (production profile)"
	@echo "make bench  - run every benchmark in benchmarks/"

setup: system venv

system:
	@scripts/setup-system.sh
	@scripts/setup-libvirt.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "worm-testbed needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' >$(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; echo "setup: pip install failed (log: $(VENV)/pip.log)"; exit 1; }
	@$(PY) -c 'import orchestrator, netfilterqueue, pyroute2, ansible_runner' 
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m 'not slow'

demo: setup
	@scripts/demo.sh

lint: venv
	$(PY) -m ruff check orchestrator testworm throttle hostagent workload tests benchmarks playbooks/library
	cd playbooks && ../$(VENV)/bin/ansible-lint --nocolor -q

bench: setup
	@scripts/setup-system.sh mininet bridge-utils   # the lab benchmark compares with Mininet 2.3
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
