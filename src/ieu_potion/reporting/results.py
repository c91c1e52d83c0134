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
REALISTIC = "ieu_gate"  # discovery by IEU's gate (potion.discovery: realistic)


def potion_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The Potion paper's Table 1 for results rows: per attack and method, mean and std
    over the benchmark discovery shares of poison healed and model damage; the one-shot
    set and realistic discovery (IEU's gate) in columns of their own (NaN where a method
    did not run on them)."""
    potion = rows[rows.discovery_share != NO_SHARE]
    wide = potion.pivot_table(
        index=["attack", "method", "discovery_share"], columns="metric", values="value"
    ).reset_index()
    shares = wide[wide.discovery_share.str.startswith("share_")]
    table = shares.groupby(["attack", "method"]).agg(
        healed_mean=("poison_healed", "mean"),
        healed_std=("poison_healed", "std"),
        damage_mean=("model_damage", "mean"),
        damage_std=("model_damage", "std"),
        shares=("discovery_share", "nunique"),
    )
    for share, prefix in ((ONE_SHOT, "one_shot"), (REALISTIC, "realistic")):
        apart = wide[wide.discovery_share == share].set_index(["attack", "method"])
        columns = {"poison_healed": f"{prefix}_healed", "model_damage": f"{prefix}_damage"}
        table = table.join(
            apart.reindex(columns=list(columns)).rename(columns=columns), how="outer"
        )
    return table.reset_index()
