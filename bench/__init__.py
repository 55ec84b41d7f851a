"""Benchmarks: ``python -m bench NAME [--quick]``; each prints figures, then one JSON line."""
