"""Shoal's benchmark harness: `python -m bench <scenario>` (see docs/benchmarks.md)."""
