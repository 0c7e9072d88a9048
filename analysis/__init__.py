"""The paper's tables and plots, regenerated from run folders.

Data flows one way: run folders -> one DataFrame (:mod:`analysis.runs`) -> a table (:mod:`analysis.table`,
rendered by :mod:`analysis.render`) and figures (:mod:`analysis.figures`). Tables and figures are pure
functions of that DataFrame and of the sweep's layout (:mod:`analysis.source`); nothing here writes into a
run folder. The commands:

    python -m analysis.tables sweeps/pe.yaml            # results/pe/reports/quick_seeds-0/table.{md,tex,csv}
    python -m analysis.plots table sweeps/pe.yaml       # results/pe/reports/quick_seeds-0/*.{png,pdf}
    python -m analysis.collect results -o runs.csv      # every run, for a notebook
    python -m analysis.report sweeps/paper-ablations.yaml   # every table + figure, report.md, report.html
"""

import ablations  # noqa: E402, F401 - its import quiets a Ctrl-C while `python -m analysis...` starts
