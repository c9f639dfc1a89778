"""Measurements: `python -m bench` runs them all and writes BENCHMARKS.md; `python -m bench.slider` one of them."""
