"""Benchmarks (not tests): run each script directly, see docs/benchmarks.md."""
