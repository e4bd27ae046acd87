"""Benchmarks: they print figures and never assert (shared/BENCH.md)."""
