"""Benchmarks run from the checkout (not installed): model speed against the official code, planning and
command start-up, aggregation of run folders into tables. Figures and commands: BENCHMARKS.md."""
