"""Mean, spread and a confidence interval for "row minus baseline" — can this ranking be trusted?

Per metric, a row's runs give one value per seed. Against the baseline row:
  * paired t interval on the per-seed differences when both rows have the same seeds (n >= 2): training
    noise shared by a seed (data order, init) cancels, so this is the tighter, correct interval;
  * Welch's unequal-variance t interval otherwise (both rows n >= 2);
  * no interval with a single seed on either side: one run says nothing about seed-to-seed variance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile. scipy comes with scikit-learn (a project dependency); scipy.special imports in a
    third of the time of scipy.stats, which matters for a table that must build in well under 3 s."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample std (ddof=1); NaN for n < 2
    n: int


def summarize(values: list[float]) -> Summary:
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return Summary(mean, std, n)


@dataclass(frozen=True)
class Difference:
    delta: float  # row mean minus baseline mean (paired: mean of per-seed differences)
    low: float = math.nan
    high: float = math.nan
    method: str = "none"  # "paired" | "welch" | "none"
    n: int = 0  # pairs (paired) or runs in the row (welch / none)
    note: str = ""  # why there is no interval

    @property
    def has_ci(self) -> bool:
        return self.method != "none"

    @property
    def contains_zero(self) -> bool | None:
        """True when the interval does not exclude 0 (the ranking is not resolved); None without interval."""
        return self.low <= 0.0 <= self.high if self.has_ci else None


def compare(row: dict[int, float], base: dict[int, float], level: float = LEVEL) -> Difference:
    """Row minus baseline, from {seed: value} of each (NaN values are left out)."""
    row = {s: v for s, v in row.items() if not math.isnan(v)}
    base = {s: v for s, v in base.items() if not math.isnan(v)}
    if not row or not base:
        return Difference(math.nan, note="no finished runs" if not row else "no finished baseline runs")
    q = (1 + level) / 2
    if set(row) == set(base):
        diffs = [row[s] - base[s] for s in sorted(row)]
        s = summarize(diffs)
        if s.n < 2:
            return Difference(s.mean, n=s.n, note="n=1: no CI")
        half = t_quantile(q, s.n - 1) * s.std / math.sqrt(s.n)
        return Difference(s.mean, s.mean - half, s.mean + half, "paired", s.n)
    a, b = summarize(list(row.values())), summarize(list(base.values()))
    delta = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(delta, n=a.n, note="n=1: no CI")
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:  # both rows identical across seeds: the difference is exact
        return Difference(delta, delta, delta, "welch", a.n)
    dof = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))  # Welch-Satterthwaite
    half = t_quantile(q, dof) * se
    return Difference(delta, delta - half, delta + half, "welch", a.n)
