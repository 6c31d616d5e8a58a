"""Benchmarks of the runner's own cost: `make bench` (`python -m bench`).

Each benchmark is a function from options to a `Result` (tables for `docs/benchmarks.md`, targets
with their verdicts, flat metrics for `--compare`, raw data for the JSON file). Benchmarks report;
nothing here asserts a timing.
"""
