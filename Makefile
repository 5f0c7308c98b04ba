# Outpost: two commands on a fresh Debian machine.
#   make demo  - broker, central bridge, gateway and a simulated crew
#   make test  - set up everything and run the tests
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup deps test test-soak demo lint typecheck bench lock clean install uninstall

setup: $(STAMP) deps

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# System programs the tests and the demo run for real.
deps:
	@bash scripts/ensure-system-deps.sh

# One run on TEST_WORKERS pytest-xdist workers, a module at a time (module fixtures
# start once); the soak/fault tests bounded by OUTPOST_SOAK_SCALE. TEST_WORKERS=0
# runs in this process.
TEST_WORKERS ?= 3
test: setup
	OUTPOST_SOAK_SCALE=$${OUTPOST_SOAK_SCALE:-0.2} $(BIN)/python -m pytest -q \
	  -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-soak: setup
	OUTPOST_SOAK_SCALE=1 $(BIN)/python -m pytest -q -m soak $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/central_ingest.py
	$(BIN)/python bench/gateway_ingest.py
	$(BIN)/python bench/drain.py
	$(BIN)/python bench/blob_upload.py
	$(BIN)/python bench/compression.py --seeds 1
	$(BIN)/python bench/replication_lag.py
	$(BIN)/python bench/xlsform_import.py

# Re-pin the lock file from pyproject.toml in a throwaway venv.
lock:
	rm -rf .lockvenv && $(PY) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet -e '.[gateway,central,dev]'
	{ echo "# Locked dependencies for Outpost (both roles + dev). Regenerate with: make lock"; \
	  .lockvenv/bin/pip freeze --exclude-editable | grep -v '^outpost'; } > requirements.lock
	rm -rf .lockvenv

# The appliance as systemd services (docs/install.md), as root:
#   make install [PREFIX=/opt/outpost] [DESTDIR=/stage] [INSTALL_ARGS="--bundle site-a.bundle --port80"]
#   make uninstall [PURGE=1]   (keeps /var/lib/outpost and /etc/outpost unless PURGE=1)
PREFIX ?= /opt/outpost
install:
	bash scripts/install.sh --prefix $(PREFIX) $(if $(DESTDIR),--root $(DESTDIR)) $(INSTALL_ARGS)

uninstall:
	bash scripts/uninstall.sh --prefix $(PREFIX) $(if $(DESTDIR),--root $(DESTDIR)) $(if $(PURGE),--purge)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
