"""Benchmarks (not part of the runtime): `python -m bench.startup` from `api/`."""
