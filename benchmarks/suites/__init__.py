"""One module per suite: `python -m benchmarks <suite>` (see harness/suite.py)."""
