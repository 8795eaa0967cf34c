"""Benchmarks: each scenario prints its figure and its ratio to a same-run baseline."""
