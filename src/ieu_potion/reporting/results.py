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


ONE_SHOT = "one_shot"


def potion_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The Potion paper's Table 1 for one set of results rows: per attack and method, mean
    and std over the discovery shares of poison healed and model damage, the one-shot set
    separately (NaN where a method was not run on it)."""
    potion = rows[rows.discovery_share != NO_SHARE]
    wide = potion.pivot_table(
        index=["attack", "method", "discovery_share"], columns="metric", values="value"
    ).reset_index()
    shares = wide[wide.discovery_share != ONE_SHOT]
    table = shares.groupby(["attack", "method"]).agg(
        healed_mean=("poison_healed", "mean"),
        healed_std=("poison_healed", "std"),
        damage_mean=("model_damage", "mean"),
        damage_std=("model_damage", "std"),
        shares=("discovery_share", "nunique"),
    )
    one_shot = wide[wide.discovery_share == ONE_SHOT].set_index(["attack", "method"])
    table["one_shot_healed"] = one_shot.get("poison_healed")
    table["one_shot_damage"] = one_shot.get("model_damage")
    return table.reset_index()
