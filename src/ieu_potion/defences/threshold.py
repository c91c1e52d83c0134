"""Choosing IEU's gate threshold from the gate's own confidences (``tau: auto``).

No ground truth is read.  The premise of IEU is that the shallow gate learns the trigger
shortcut long before the clean task, so its confidences on the training set form a small
confident group (the poison) apart from the bulk.  The confidences are taken to the logit
scale, log(c / (1 - c)), where 0.95 and 0.998 lie far apart, and split in two by Otsu's
rule computed exactly over the sorted values (no histogram bins): the cut that maximises
the between-group variance, among cuts whose upper (flagged) group is a minority of at
least ``min_flagged`` samples.  tau is the confidence at the middle of the gap the cut
falls in.

How well the two groups stand apart is Fisher's ratio (mean gap)^2 / (pooled within-group
variance); unlike Otsu's explained-variance share it does not favour cuts into equal
halves, so a small, tight, confident group scores high.  ``gate_epoch: separation`` keeps
the gate epoch whose confidences separate best by it.

A ratio alone has no scale that holds across data sets: a skewed crowd of clean samples
with no trigger among them gets cut at 8-19 on GTSRB, where the trigger's cut reaches
21-71, and on another data set a learnt trigger first crossed 20 late.  ``contrast``
measures the cut against the same confidences' own background: the cut's ratio over the
ratio of the best cut within its lower (unflagged) group.  Where the cut only slices one
crowd, the crowd's lower part slices about as well (contrast near 1); where a separate
group sits above the crowd, the crowd itself does not split (contrast mostly 2.2 or more
measured; docs/ieu.md has the exceptions).

That maximum rewards a cut that isolates a tight sub-cluster of the poison and leaves the
rest, still confident, on the clean side.  ``gate_epoch: consensus`` (``agreement``) keeps
instead the epoch whose flagged set agrees best with the sets the other usable epochs
flagged: the poison is the group flagged epoch after epoch, and an epoch that flags only
part of it, or flags clean samples besides, stands apart from the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_CLIP = 1e-7  # confidences are float32 softmax values: 1 - c is meaningless below this


@dataclass(frozen=True)
class Split:
    tau: float  # flag confidence > tau
    separation: float  # Fisher's ratio of the two groups on the logit scale
    flagged: int  # samples above tau
    total: int
    # separation over that of the best cut within the lower group (inf where that group
    # has no cut of its own)
    contrast: float

    @property
    def share(self) -> float:
        return self.flagged / self.total


def logits(confidence: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(confidence, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    return np.log(c) - np.log1p(-c)


def _best_cut(z: np.ndarray, min_flagged: int) -> tuple[int, float] | None:
    """Over sorted logits ``z``: (k, Fisher's ratio) of the cut that puts ``z[k + 1:]`` in
    the flagged group, or None where no cut leaves a minority of ``min_flagged``."""
    n = len(z)
    if n < 2:
        return None
    low = np.arange(1, n)  # cut after position k - 1: z[:k] low, z[k:] flagged
    high = n - low
    sums, squares = np.cumsum(z), np.cumsum(z * z)
    mean_low = sums[low - 1] / low
    mean_high = (sums[-1] - sums[low - 1]) / high
    var_low = np.maximum(squares[low - 1] / low - mean_low**2, 0.0)
    var_high = np.maximum((squares[-1] - squares[low - 1]) / high - mean_high**2, 0.0)
    w_low, w_high = low / n, high / n
    between = w_low * w_high * (mean_high - mean_low) ** 2
    valid = (high >= min_flagged) & (high <= low) & (z[1:] > z[:-1])
    if not valid.any():
        return None
    k = int(np.argmax(np.where(valid, between, -1.0)))
    within = w_low[k] * var_low[k] + w_high[k] * var_high[k]
    gap = mean_high[k] - mean_low[k]
    return k, float(gap**2 / within if within > 0 else math.inf)


def _ratio(a: float, b: float) -> float:
    """a / b for Fisher's ratios, which may be infinite (inf / inf counts as 1)."""
    if math.isinf(b):
        return 1.0 if math.isinf(a) else 0.0
    return a / b if b > 0 else math.inf


def otsu_split(confidence: np.ndarray, min_flagged: int) -> Split | None:
    """The best two-group cut of the confidences (see the module text), or None where no
    cut leaves a minority of at least ``min_flagged`` samples above it (too few samples,
    or the confidences take too few distinct values)."""
    if min_flagged < 1:
        raise ValueError(f"min_flagged must be >= 1, got {min_flagged}")
    z = np.sort(logits(confidence))
    cut = _best_cut(z, min_flagged)
    if cut is None:
        return None
    k, separation = cut
    inner = _best_cut(z[: k + 1], min_flagged)
    middle = (z[k] + z[k + 1]) / 2.0
    return Split(
        tau=float(1.0 / (1.0 + math.exp(-middle))),
        separation=separation,
        flagged=len(z) - k - 1,
        total=len(z),
        contrast=math.inf if inner is None else _ratio(separation, inner[1]),
    )


def agreement(flags: Mapping[int, np.ndarray]) -> dict[int, float]:
    """Per epoch, the mean Jaccard index (shared flags / flags of either) of its flagged
    set with every other epoch's in ``flags`` (epoch: boolean array over the training
    set); 1.0 for a lone epoch."""
    sets = {epoch: np.flatnonzero(flagged) for epoch, flagged in flags.items()}
    means = {}
    for epoch, mine in sets.items():
        overlaps = []
        for other, theirs in sets.items():
            if other != epoch:
                shared = len(np.intersect1d(mine, theirs, assume_unique=True))
                either = len(mine) + len(theirs) - shared
                overlaps.append(shared / either if either else 1.0)
        means[epoch] = float(np.mean(overlaps)) if overlaps else 1.0
    return means


def choose_epoch(
    rule: str, separation: Mapping[int, float], agreements: Mapping[int, float]
) -> int:
    """The epoch ``gate_epoch: <rule>`` keeps among the usable ones (the keys of
    ``separation``, by Fisher's ratio; ``agreements`` from ``agreement``): ``separation``
    the best separated; ``consensus`` the one that agrees best, ties to the better
    separated."""
    if rule == "separation":
        return max(separation, key=lambda e: separation[e])
    if rule == "consensus":
        return max(separation, key=lambda e: (agreements[e], separation[e]))
    raise ValueError(f"unknown gate_epoch rule {rule!r}: consensus or separation")


def text_histogram(confidence: np.ndarray, tau: float, bins: int = 10) -> str:
    """Counts per confidence bin on one line, the bin holding tau marked, for the log."""
    counts, edges = np.histogram(np.asarray(confidence, dtype=float), bins=bins, range=(0, 1))
    cells = []
    for count, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        mark = "*" if lo <= tau < hi or (hi == 1.0 and tau >= 1.0) else ""
        cells.append(f"[{lo:.1f},{hi:.1f}){mark}:{count}")
    return " ".join(cells)
