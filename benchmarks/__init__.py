"""Benchmarks run from the checkout (not installed): model speed against the official code, planning and
command start-up, aggregation of run folders into tables. Figures and commands: BENCHMARKS.md."""

import ablations  # noqa: E402, F401 - its import quiets a Ctrl-C while `python -m analysis...` starts
