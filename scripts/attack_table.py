"""Per attack, the undefended and IEU clean accuracy and ASR of a finished run, as Markdown.

Reads the results rows the ieu_finetune and baselines nodes wrote (one Parquet file per
node under ``data/07_model_output/<namespace>/seed_<s>/``), so it shows what the last run
of each namespace produced, for example after

    .venv/bin/kedro run --env all_attacks --pipelines ieu_finetune,baselines
    .venv/bin/python scripts/attack_table.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ieu_potion.reporting.tables import markdown_table

METRICS = {"clean_accuracy": "CA", "attack_success_rate": "ASR"}
EXTRA = {"gate_flagged": "IEU flagged", "unlearning_steps": "IEU unlearning steps"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/07_model_output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = sorted(args.data.glob(f"*/seed_{args.seed}/results_[ni][oe]*.parquet"))
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    rows = rows[rows["method"].isin(["none", "ieu"])]
    wide = rows.pivot_table(
        index=["namespace", "attack"], columns=["method", "metric"], values="value"
    )
    table = pd.DataFrame(index=wide.index)
    for method, label in (("none", "undefended"), ("ieu", "IEU")):
        for metric, short in METRICS.items():
            table[f"{label} {short}"] = wide.get((method, metric))
    for metric, label in EXTRA.items():
        table[label] = wide.get(("ieu", metric)).round().astype("Int64")
    print(markdown_table(table.reset_index()))


if __name__ == "__main__":
    main()
