# Two entry points: `make run` and `make test`. Each creates/updates .venv on its own.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# the compiled core (mypyc; bastion/corebuild.py): rebuilt when a core source changes, skipped
# without a C compiler; BASTION_PURE=1 runs the pure-Python core anyway
NATIVE := $(VENV)/bastion-native/.built
PURE_TESTS := tests/core/test_core_properties.py tests/core/test_core_reference.py \
	tests/core/perp/test_perp_properties.py tests/core/test_corebuild.py
CORE_SRC := $(shell find src/bastion/core -name '*.py') src/bastion/corebuild.py

.PHONY: run test test-fast test-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@# the official Binance connectors both write binance/api.py, binance/websocket/... and the
	@# spot connector's copies serve both (the futures one's break the spot WebSocket client):
	@# reinstall it last, whatever order pip chose
	$(BIN)/python -m pip install -q --no-deps --force-reinstall binance-connector==3.13.0
	rm -f $(VENV)/.installed-* && touch $(STAMP)

$(NATIVE): $(STAMP) $(CORE_SRC)
	mkdir -p $(dir $@)
	$(BIN)/python -c 'import sys; from bastion.corebuild import build; sys.exit(build())'
	touch $@

run: $(STAMP) $(NATIVE)
	$(BIN)/bastion run

test: $(STAMP) $(NATIVE) test-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest
	@# the suite above ran the compiled core (if built); the core's property tests again, pure
	BASTION_PURE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(PURE_TESTS)

# The quick loop while developing: everything but tests marked `slow` (crash loops, e2e).
test-fast: $(STAMP) $(NATIVE)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not slow"

# System packages the tests use (headless chromium for the status page); needs root + apt-get,
# otherwise the browser tests skip and say why.
test-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "test-deps: chromium missing and cannot apt-get it (not root); browser tests will skip"; fi; \
	fi
