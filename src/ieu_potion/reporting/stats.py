"""Means with 95% confidence intervals, the way every table and figure reports them.

The interval is Student's t over independent repetitions (seeds, or seeds x shares where a
table says so): mean +- t(0.975, n-1) * s / sqrt(n).  With one repetition there is no
interval (NaN) and tables say N = 1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LEVEL = 0.95


def interval(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% interval, n) over the finite ``values`` (``aggregate``
    counts the others)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(v[0]), math.nan, 1
    from scipy import stats  # imported here: a second of every `kedro` start-up otherwise

    half = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return float(v.mean()), float(half), n


SUFFIXES = ("", "_ci95", "_n", "_left_out")


def aggregate(frame: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """Per group of ``by``: ``<col>`` (mean), ``<col>_ci95`` (half-width), ``<col>_n`` and
    ``<col>_left_out`` (rows of the group whose value is NaN or infinite: not in the mean,
    and counted so that a table can say so) for every column of ``columns`` in ``frame``."""
    present = [c for c in columns if c in frame]
    rows = []
    for group, part in frame.groupby(by, sort=True, dropna=False):
        row = dict(zip(by, group if isinstance(group, tuple) else (group,), strict=True))
        for column in present:
            mean, half, n = interval(part[column])
            row.update(
                {
                    column: mean,
                    f"{column}_ci95": half,
                    f"{column}_n": n,
                    f"{column}_left_out": len(part) - n,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=by + [f"{c}{s}" for c in present for s in SUFFIXES])


def overlap(mean_a: float, half_a: float, mean_b: float, half_b: float) -> str:
    """'overlap' when the two intervals share a point, 'apart' when not, '' when either
    has no interval."""
    if any(math.isnan(x) for x in (mean_a, half_a, mean_b, half_b)):
        return ""
    return "overlap" if abs(mean_a - mean_b) <= half_a + half_b else "apart"


def with_interval(mean: float, half: float, scale: float = 1.0, digits: int = 1) -> str:
    """``mean +- half`` as text, scaled (100 for percent); the mean alone without interval."""
    if math.isnan(mean):
        return "n/a"
    if math.isnan(half):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * half:.{digits}f}"
