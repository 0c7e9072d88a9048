"""Benchmarks run from the checkout (not installed): model speed against the official code, planning and
command start-up, aggregation of run folders into tables. Figures and commands: BENCHMARKS.md."""

from ablations.cli import quiet_interrupt_while_starting  # noqa: E402 - a Ctrl-C while `python -m` imports: one line

quiet_interrupt_while_starting()
