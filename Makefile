# The two commands: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: peers demo test unit integration bench lint typecheck kafka-up kafka-down clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

demo: $(STAMP)  ## local broker + worker + simulated model servers, live output (Ctrl-C stops)
	$(VENV)/bin/driftline demo $(ARGS)

test: $(STAMP) peers  ## unit + integration tests (starts a real local Kafka broker)
	$(VENV)/bin/pytest -q -ra $(ARGS)

# Real peers from Debian's packages: promtool (prometheus) checks the exposition format, and
# Alertmanager receives the notifier's alerts. Installed when missing and we are root; otherwise
# the tests that need them say they skipped.
PEERS := prometheus:promtool prometheus-alertmanager:prometheus-alertmanager
peers:
	@for peer in $(PEERS); do pkg=$${peer%%:*}; cmd=$${peer##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	    { apt-get install -y -q $$pkg >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$pkg >/dev/null 2>&1; }; } ; } || \
	    echo "$$cmd not available: its tests will be skipped"; done
	@# the package's own service would listen on 9093, the local broker's controller port: tests run their own
	@service prometheus-alertmanager stop >/dev/null 2>&1 || true

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit $(ARGS)

integration: $(STAMP)
	$(VENV)/bin/pytest -q tests/integration $(ARGS)

bench: $(STAMP)  ## benchmarks in loadtest/, JSON results under .driftline/bench/
	$(VENV)/bin/python loadtest/benchmark.py $(ARGS)
	$(VENV)/bin/python loadtest/bench_validation.py
	$(VENV)/bin/python loadtest/bench_sdk.py
	$(VENV)/bin/python loadtest/bench_ingest.py
	$(VENV)/bin/python loadtest/bench_metrics.py
	$(VENV)/bin/python loadtest/bench_drift.py
	$(VENV)/bin/python loadtest/bench_anomaly.py
	$(VENV)/bin/python loadtest/bench_detection.py

lint: $(STAMP)
	$(VENV)/bin/ruff check streams tests loadtest examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

kafka-up: $(STAMP)
	$(VENV)/bin/driftline kafka up

kafka-down: $(STAMP)
	$(VENV)/bin/driftline kafka down

clean:
	rm -rf .driftline
