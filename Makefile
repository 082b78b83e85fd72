# Two entry points: `make run` and `make test`. Each creates/updates .venv on its own.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

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

run: $(STAMP)
	$(BIN)/bastion run

test: $(STAMP) test-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The quick loop while developing: everything but tests marked `slow` (crash loops, e2e).
test-fast: $(STAMP)
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
