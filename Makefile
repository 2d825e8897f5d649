# The two commands of the README. Both create or reuse .venv by themselves.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all setup

setup:
	@VENV=$(VENV) bin/setup_env

# Main job on the built-in demo data (synthetic shapes set).
demo: setup
	$(PY) bin/demo --flagfile=configs/shapes_cpu.flags --output_dir=demo_data

# Fast suite (CI). Slow end-to-end tests: `make test-all`.
test: setup
	$(PY) -m pytest -q --durations=10

test-all: setup
	$(PY) -m pytest -q -m "" --durations=10
