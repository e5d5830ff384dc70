"""Benchmarks: `make bench` (or `python -m bench [NAME ...]`).

Each module bench/bench_<name>.py defines ``run(quick: bool) -> BenchResult``.
Results go to bench/results/<name>.json and a markdown table
bench/results/<name>.md; the runner prints every table. Timing and size
targets live here, never in unit tests: compare ratios measured in one run.
"""
