"""Benchmarks: `make bench` runs them all; results land in benchmarks/results/."""
