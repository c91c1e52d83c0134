"""IEU's gate settings out of sample: what the gate flags under each value, without training.

Reads what a run of ``--env`` left per IEU namespace and seed: the gate's confidences on
the training set after every stage-1 epoch (``<ns>.gate_epochs``), the tau stage 2 used
and IEU's results.  For every value of each ``--vary`` setting (the others at the
environment's values) it replays ``keep_gate_epoch`` and the threshold, and prints per
namespace, setting and value: the epoch kept, the samples flagged, precision and recall
against the ground truth (mean and 95% interval over the seeds), how many seeds flagged
nothing, and IEU's clean accuracy and ASR over the seeds where every seed's replay keeps
the run's own epoch and tau (stage 2 is then the same computation); otherwise "rerun":
those values need IEU run again (``kedro run --params ieu.defence.<setting>=<value>``).

    .venv/bin/python scripts/gate_sensitivity.py --vary min_separation=10,15,20,30,40 \\
        --vary min_contrast=0,1.5,2,3
    .venv/bin/python scripts/gate_sensitivity.py --env gtsrb \\
        --vary gate_epoch=consensus,separation,last
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import numpy as np
import pandas as pd
from kedro.io import DataCatalog

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.defences.ieu import (
    GATE_EPOCHS,
    IEUConfig,
    choose_tau,
    gate_scores,
    keep_gate_epoch,
    min_flagged,
)
from ieu_potion.reporting.stats import interval, with_interval
from ieu_potion.reporting.tables import markdown_table
from ieu_potion.schema import validate_parameters

SETTINGS = {"min_separation": float, "min_contrast": float, "gate_epoch": str}


def replays(catalog, params, namespace: str, seed: int, grid) -> list[dict]:
    """One row per (setting, value) of one run: the epoch kept, the flags' scores, and
    whether the run's own choice is repeated (with its CA and ASR)."""
    run = f"{namespace}.seed_{seed}"
    epochs = catalog.load(f"{run}.gate_epochs")
    confidences, poisoned = epochs["confidence"], epochs["poisoned"].astype(bool)
    history = catalog.load(f"{run}.gate_history")
    own_epoch = int(history.epoch[history.kept].iloc[0])
    own_tau = float(catalog.load(f"{run}.gate_confidence")["tau"])
    results = catalog.load(f"{run}.results_ieu").set_index("metric").value
    least = min_flagged(params.ieu.defence, params.finetune_for(namespace).batch_size)
    rows = []
    for setting, values in grid.items():
        for value in values:
            config = dataclasses.replace(params.ieu.defence, **{setting: value})
            kept = keep_gate_epoch(config, confidences, least)
            conf = confidences[kept.epoch - 1]
            tau = choose_tau(config, conf, least)[2]
            same = kept.epoch == own_epoch and np.isclose(tau, own_tau, rtol=0, atol=1e-9)
            rows.append(
                {
                    "namespace": namespace,
                    "seed": seed,
                    "setting": setting,
                    "value": value,
                    "epoch": kept.epoch,
                    **gate_scores(conf > tau, poisoned),
                    "same_as_run": bool(same),
                    "clean_accuracy": results["clean_accuracy"] if same else np.nan,
                    "attack_success_rate": results["attack_success_rate"] if same else np.nan,
                }
            )
    return rows


def over_seeds(values: pd.Series, scale: float = 1.0) -> str:
    """Mean and 95% interval of one value per seed; "-" where no seed has one."""
    return with_interval(*interval(values)[:2], scale) if len(values) else "-"


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (namespace, setting, value): mean and 95% interval over seeds (N seeds);
    precision and recall over the seeds that flagged something."""
    out = []
    for (namespace, setting, value), part in rows.groupby(
        ["namespace", "setting", "value"], sort=False
    ):
        flagging = part[part.gate_flagged > 0]
        same = part.same_as_run.all()
        out.append(
            {
                "namespace": namespace,
                "setting": setting,
                "value": value,
                "N (seeds)": len(part),
                "epochs kept": ", ".join(str(e) for e in part.epoch),
                "flagged": over_seeds(part.gate_flagged),
                "precision %": over_seeds(flagging.gate_precision, 100),
                "recall %": over_seeds(flagging.gate_recall, 100),
                "flagged nothing": len(part) - len(flagging),
                "IEU CA %": over_seeds(part.clean_accuracy, 100) if same else "rerun",
                "IEU ASR %": over_seeds(part.attack_success_rate, 100) if same else "rerun",
            }
        )
    return pd.DataFrame(out)


def parse_grid(items: list[str]) -> dict[str, list]:
    """``SETTING=V1,V2,...`` items as {setting: values}, each value checked by IEUConfig."""
    grid: dict[str, list] = {}
    for item in items:
        setting, _, values = item.partition("=")
        if setting not in SETTINGS or not values:
            raise SystemExit(
                f"--vary {item!r}: give SETTING=V1,V2,... with SETTING one of "
                f"{tuple(SETTINGS)} (gate_epoch: one of {GATE_EPOCHS})"
            )
        grid[setting] = [SETTINGS[setting](v) for v in values.split(",")]
        for value in grid[setting]:  # out-of-range values are refused before any work
            IEUConfig.from_params({setting: value})
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--namespaces", nargs="+", default=None, help="default: IEU's")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the run's")
    parser.add_argument("--vary", action="append", required=True, help="SETTING=V1,V2,...")
    parser.add_argument("--csv", help="also write every replay's row here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    grid = parse_grid(args.vary)

    raw, catalog_config = project_config(args.env)
    params = validate_parameters(raw)
    catalog = DataCatalog.from_config(catalog_config)
    rows = [
        row
        for namespace in args.namespaces or params.ieu_finetune.attacks
        for seed in (params.seeds if args.seeds is None else args.seeds)
        for row in replays(catalog, params, namespace, seed, grid)
    ]
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print(markdown_table(summary(frame)))


if __name__ == "__main__":
    main()
