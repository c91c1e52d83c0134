"""The shared long-format results table: one row per (run, metric)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ieu_potion.training.engine import History

RESULT_COLUMNS = ("dataset", "attack", "method", "discovery_share", "seed", "metric", "value")
NO_SHARE = "none"  # discovery_share of methods that use no discovered subset


def result_rows(
    dataset: str,
    attack: str,
    method: str,
    seed: int,
    metrics: dict[str, Any],
    discovery_share: str = NO_SHARE,
) -> pd.DataFrame:
    """Rows for every numeric metric; NaN values are kept (a metric that does not apply)."""
    rows = [
        {
            "dataset": dataset,
            "attack": attack,
            "method": method,
            "discovery_share": discovery_share,
            "seed": seed,
            "metric": name,
            "value": float(value),
        }
        for name, value in metrics.items()
        if isinstance(value, int | float | np.integer | np.floating)
    ]
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


TOTALS = ("samples_queued", "unlearning_steps", "unlearning_skipped", "skipped_steps")


def run_summary(history: History, dataset: str, attack: str, method: str, seed: int):
    """Final-epoch metrics, totals over epochs and wall time, as results rows."""
    epochs = history.table()
    metrics = dict(epochs.iloc[-1])
    for total in TOTALS:
        if total in epochs:
            metrics[total] = epochs[total].sum()
    metrics["seconds"] = history.seconds
    metrics["seconds_per_epoch"] = history.seconds / len(epochs)
    for drop in ("epoch", "lr", "train_loss"):
        metrics.pop(drop, None)
    return result_rows(dataset, attack, method, seed, metrics)
