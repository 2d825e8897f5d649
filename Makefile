# The two commands of the README. Both create or reuse .venv by themselves.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all setup

setup:
	@VENV=$(VENV) bin/setup_env

# Main job on the built-in demo data (synthetic shapes set).
demo: setup
	$(PY) bin/demo --flagfile=configs/shapes_demo.flags --output_dir=demo_data

# Fast suite (CI). Slow end-to-end tests: `make test-all`.
# Two pytest-xdist workers, a test file each at a time: alone, the suite keeps
# about 1.1 of 2 cores busy (tracing and model building run on one thread).
# Files start in collection order, the long ones first (tests/conftest.py).
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-all: setup
	$(PY) -m pytest -q -m "" --durations=10 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
