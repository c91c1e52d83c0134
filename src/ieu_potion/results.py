"""The vocabulary of results, importable from anywhere: the long-format row schema, the
names of discovery subsets, and the key that says which run produced a row.

A row is one metric of one run.  A run is identified by the data set, the attack
namespace (two variants of one attack are two namespaces), the method, the discovery
share (Potion) and the seed; ``fingerprint`` is a short hash of every parameter that
produced the row except the seed, so that rows of one configuration can be pooled over
seeds and rows of an older configuration are never mixed with the current ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

RESULT_COLUMNS = (
    "dataset",
    "namespace",
    "attack",
    "method",
    "discovery_share",
    "seed",
    "fingerprint",
    "metric",
    "value",
)
KEY_COLUMNS = tuple(c for c in RESULT_COLUMNS if c != "value")
NO_SHARE = "none"  # discovery_share of methods that use no discovered subset
ONE_SHOT = "one_shot"  # the single discovered sample
REALISTIC = "ieu_gate"  # discovery by IEU's gate (potion.discovery: realistic)

# Per-epoch columns that are summed over epochs for a run's totals.
TOTALS = ("samples_queued", "unlearning_steps", "unlearning_skipped", "skipped_steps")
# Metrics that measure the machine (time, memory): they differ between otherwise
# identical runs.
TIMING_METRICS = (
    "seconds",
    "seconds_per_epoch",
    "search_seconds",
    "importance_seconds",
    "peak_memory_mb",
)


def replicate_name(namespace: str, seed: int) -> str:
    """The Kedro namespace of one attack namespace at one seed: ``<namespace>.seed_<s>``."""
    return f"{namespace}.seed_{seed}"


def split_replicate(name: str) -> tuple[str, int]:
    """(namespace, seed) of a name made by ``replicate_name``."""
    namespace, marker, seed = name.rpartition(".seed_")
    if not (namespace and marker and seed.isdigit()):
        raise ValueError(f"{name!r} is no '<namespace>.seed_<s>' name")
    return namespace, int(seed)


def fingerprint(configuration: Any) -> str:
    """A short, stable hash of a JSON-like configuration (key order does not matter)."""
    text = json.dumps(configuration, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class RunKey:
    """Who produced a row: everything but the method, the share, the metric and the value."""

    dataset: str
    namespace: str
    attack: str
    seed: int
    fingerprint: str

    def replicate(self, config):
        """``config`` (a dataclass with a ``seed``) for this run: the run's seed is added to
        the configured one, so seed 0 reproduces the configuration as written."""
        return dataclasses.replace(config, seed=config.seed + self.seed)

    def rows(
        self, method: str, metrics: dict[str, Any], discovery_share: str = NO_SHARE
    ) -> pd.DataFrame:
        """One row per numeric metric; NaN values are kept (a metric that does not apply)."""
        rows = [
            {
                "dataset": self.dataset,
                "namespace": self.namespace,
                "attack": self.attack,
                "method": method,
                "discovery_share": discovery_share,
                "seed": self.seed,
                "fingerprint": self.fingerprint,
                "metric": name,
                "value": float(value),
            }
            for name, value in metrics.items()
            if isinstance(value, int | float | np.integer | np.floating)
        ]
        return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def check_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with exactly the schema's columns, in order; raises if one is missing."""
    missing = [c for c in RESULT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"results rows lack columns {missing}")
    return rows[list(RESULT_COLUMNS)].astype({"discovery_share": str, "seed": int})


def final_metrics(epochs: pd.DataFrame, seconds: float) -> dict[str, float]:
    """A training run's metrics: its last epoch, totals over epochs and wall time."""
    metrics = dict(epochs.iloc[-1])
    for total in TOTALS:
        if total in epochs:
            metrics[total] = epochs[total].sum()
    metrics["seconds"] = seconds
    metrics["seconds_per_epoch"] = seconds / len(epochs)
    for drop in ("epoch", "lr", "train_loss"):
        metrics.pop(drop, None)
    return metrics
