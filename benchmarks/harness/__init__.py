"""The benchmark harness: see benchmarks/__init__.py."""
