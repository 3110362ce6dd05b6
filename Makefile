# KnowledgeNest: `make run` starts the whole suite, `make test` runs every test.
# Both create the virtual environment .venv and install what they need on first use, at the
# versions pinned in constraints.txt (`make lock` re-resolves it after a change to setup.cfg).
#
#   make help               this list
#   make install            .venv with the package (editable) and its dev tools
#   make run                the whole suite in one process; Ctrl-C stops it
#   make test               checks (or starts) RabbitMQ, its management API and PostgreSQL, then
#                           runs every test; test-unit, test-integration, test-faults: parts of it
#   make test-services      only the check (or start) of RabbitMQ, its management API, PostgreSQL
#   make lock               re-resolve constraints.txt from setup.cfg (pip-tools)
#   make bench              the benchmarks (bench/results.md)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.yml
PYTEST_ARGS ?=

.PHONY: help install run test test-unit test-integration test-faults test-services lock reliability-report bench clean \
	cluster cluster-stop

help:
	@sed -n 's/^#   //p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the package's requirements change. knowledge_nest_quiet.pth quiets nameko's
# own `nameko run` (services/__init__.py says why); an editable install does not ship it, so it
# is copied here.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	cp knowledge_nest_quiet.pth "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/"
	touch $@

install: $(VENV)/.installed

# The whole suite in one process: checks (or starts) the broker, migrates, runs every service and
# the gateway; Ctrl-C stops it all. To use another checkout's venv without reinstalling this one
# into it: make -o /abs/venv/.installed run VENV=/abs/venv
run: install
	$(BIN)/python -m operations.runner --config $(CONFIG)

# The broker, its management API and PostgreSQL, started or enabled where this machine has them;
# otherwise one line says what to run.
test-services: install
	$(BIN)/python scripts/check_test_services.py

# The official AsyncAPI parser (tests/unit/test_contracts.py), when node is installed.
ASYNCAPI_PARSER := tools/asyncapi/node_modules/.package-lock.json
$(ASYNCAPI_PARSER): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix tools/asyncapi --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the AsyncAPI parser test will be skipped"; fi

test: test-services $(ASYNCAPI_PARSER)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: test-services
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The fault-test matrix alone (tests/faults: connections cut, processes killed); also part of test.
test-faults: test-services
	$(BIN)/pytest tests/faults -m faults $(PYTEST_ARGS)

# constraints.txt: every package at the version the tests ran on. Keeps the pins it has where
# setup.cfg still allows them; `make lock UPGRADE=--upgrade` moves everything to the newest.
# pip-tools lives in its own environment, so that it is not in what the tests run on.
UPGRADE ?=
LOCK_VENV ?= .venv-lock
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) \
	    && $(LOCK_VENV)/bin/python -m pip install --quiet 'pip-tools>=7.6,<8')
	$(LOCK_VENV)/bin/pip-compile --quiet $(UPGRADE) --extra dev --extra bench --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links --output-file constraints.txt setup.cfg

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
$(VENV)/.installed-bench: setup.cfg pyproject.toml constraints.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var/*.db var/*.db-* .pytest_cache *.egg-info build $(LOCK_VENV)
