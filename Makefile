# KnowledgeNest: `make run` starts the whole suite, `make test` runs every test.
# Both create the virtual environment .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.yml
PYTEST_ARGS ?=

.PHONY: install run test test-unit test-integration test-faults reliability-report bench clean \
	cluster cluster-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the package's requirements change.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The whole suite in one process: checks (or starts) the broker, migrates, runs every service and
# the gateway; Ctrl-C stops it all. To use another checkout's venv without reinstalling this one
# into it: make -o /abs/venv/.installed run VENV=/abs/venv
run: install
	$(BIN)/python -m services.kit.runner --config $(CONFIG)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The fault-test matrix alone (tests/faults: connections cut, processes killed); also part of test.
test-faults: install
	$(BIN)/pytest tests/faults -m faults $(PYTEST_ARGS)

# Runs the matrix recording what it observed, then renders docs/reliability.md from it.
reliability-report: install
	rm -f var/reliability.json
	mkdir -p var
	RELIABILITY_RESULTS=$(CURDIR)/var/reliability.json $(BIN)/pytest tests/faults -m faults $(PYTEST_ARGS)
	$(BIN)/python scripts/reliability_report.py var/reliability.json docs/reliability.md

# A three-node RabbitMQ cluster beside this machine's broker (AMQP 5701-5703, management
# 15701-15703; data and logs in var/cluster), the one the tests start for themselves; then
# RABBITMQ_HOSTS=127.0.0.1:5701,127.0.0.1:5702,127.0.0.1:5703 QUEUE_TYPE=quorum make run
cluster: install
	$(BIN)/python -m tests.support.cluster start --dir var/cluster

cluster-stop: install
	$(BIN)/python -m tests.support.cluster stop --dir var/cluster

# Benchmarks: the suite against plain nameko and the raw broker (bench/results.md and .json);
# BENCH_ARGS=--quick for a run under a minute. Needs the local broker with its management API.
BENCH_ARGS ?=
$(VENV)/.installed-bench: setup.cfg pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var/*.db var/*.db-* .pytest_cache *.egg-info
