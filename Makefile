# Entry points. `make run` and `make test` do all set-up on a fresh clone.
SHELL := bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
UV := .tools/uv/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help venv browser tools kafka-up kafka-down kafka-status topics run test test-unit lint schemas screenshots bench chaos clean

help:
	@echo "make run          broker (unless TRIGGERS_KAFKA_BOOTSTRAP is set), topics, examples, worker + serve + runner"
	@echo "make test         install everything, then run every test (starts its own broker)"
	@echo "make test-unit    fast tests without a broker"
	@echo "make kafka-up     start the local Kafka on 127.0.0.1:9092 (no-op if one answers)"
	@echo "make kafka-down   stop the broker kafka-up started"
	@echo "make lint         ruff, formatting and mypy"
	@echo "make schemas      regenerate schemas/trigger.schema.json from the models"
	@echo "make screenshots  retake the console screenshots in docs/screenshots/ (browser test)"
	@echo "make bench        benchmarks (results in bench/results/)"
	@echo "make chaos        100k events while workers are SIGKILLed; verifies exactly-once"

$(UV):
	python3 -m venv .tools/uv
	.tools/uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The virtual environment, exactly as uv.lock pins it.
$(BIN)/triggers: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --python python3.11
	@touch $@

venv: $(BIN)/triggers

# Go tools the tests run, built from the versions deploy/tools/go.mod pins (the Go module
# proxy is the only download): promtool for the alert rules' tests, helm and a manifest
# validator (Kubernetes' own API types, strict) for the chart's.
GOTOOLS := .tools/bin/promtool .tools/bin/helm .tools/bin/validate-manifests
.tools/bin/promtool: deploy/tools/go.mod deploy/tools/go.sum
	go -C deploy/tools build -o $(CURDIR)/$@ github.com/prometheus/prometheus/cmd/promtool
.tools/bin/helm: deploy/tools/go.mod deploy/tools/go.sum
	go -C deploy/tools build -o $(CURDIR)/$@ helm.sh/helm/v3/cmd/helm
.tools/bin/validate-manifests: deploy/tools/go.mod deploy/tools/go.sum deploy/tools/validate/main.go
	go -C deploy/tools build -o $(CURDIR)/$@ ./validate

tools: $(GOTOOLS)

# Debian's Chromium for the console's browser test (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; }
	@command -v chromium >/dev/null && chromium --version 2>/dev/null

kafka-up:
	deploy/kafka/kafka.sh up

kafka-down:
	deploy/kafka/kafka.sh down

kafka-status:
	deploy/kafka/kafka.sh status

topics: venv
	$(BIN)/triggers topics create

run: venv
	deploy/run-local.sh

test: venv browser tools
	$(BIN)/pytest

test-unit: venv
	$(BIN)/pytest tests/unit

lint: venv
	$(BIN)/ruff check processor tests bench
	$(BIN)/ruff format --check processor tests bench
	$(BIN)/mypy

screenshots: venv browser
	TRIGGERS_UI_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/integration/test_console.py

schemas: venv
	$(BIN)/python -m processor.definitions.schema > schemas/trigger.schema.json

# 100k events, two workers, SIGKILLs and rebalances, then a read_committed verifier.
chaos: venv
	@[ -n "$${TRIGGERS_KAFKA_BOOTSTRAP:-}" ] || deploy/kafka/kafka.sh up
	$(BIN)/python -m tests.integration.chaos --events 100000 --kills 8 \
	  --bootstrap $${TRIGGERS_KAFKA_BOOTSTRAP:-127.0.0.1:9092} --report bench/results/chaos.json

# Quix Streams, the peer in bench/event_path.py, pins an older confluent-kafka: own venv.
QUIX := .bench/quix/bin/python
$(QUIX): $(UV)
	$(UV) venv -q --python python3.11 .bench/quix
	VIRTUAL_ENV=.bench/quix $(UV) pip install -q quixstreams==3.28.1

bench: venv $(QUIX)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --python python3.11 --group bench
	@[ -n "$${TRIGGERS_KAFKA_BOOTSTRAP:-}" ] || deploy/kafka/kafka.sh up
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/hot_path.py --repeat 3
	$(BIN)/python bench/patterns.py
	$(BIN)/python bench/transactions.py --backoff 10 1 --spaced
	$(BIN)/python bench/reads.py
	$(BIN)/python bench/event_path.py --rounds 3
	$(BIN)/python bench/event_path.py --mix sparse --rounds 3
	$(BIN)/python bench/event_path.py --only triggers --rounds 3 --loads 0.1 0.25 0.5 0.75
	$(BIN)/python bench/event_path.py --scaling 10 1000 10000 100000
	$(BIN)/python bench/worker_scale.py
	$(BIN)/python bench/scale_out.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/plots.py

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
