"""Tables for the report: the run's slice of the long results table and its wide views."""

from __future__ import annotations

import math

import pandas as pd

from ieu_potion.reporting.results import NO_SHARE, RESULT_COLUMNS

KEY = [c for c in RESULT_COLUMNS if c != "value"]


def run_results(tables: list[pd.DataFrame], dataset: str, attacks: list[str]) -> pd.DataFrame:
    """This run's rows: the results tables written by its nodes, restricted to its data set
    and attack namespaces (the shared file may hold rows of earlier runs), one row per key."""
    frames = [t for t in tables if len(t)]
    if not frames:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    rows = pd.concat(frames, ignore_index=True).astype({"discovery_share": str})
    rows = rows[(rows.dataset == dataset) & rows.attack.isin(attacks)]
    rows = rows.drop_duplicates(subset=KEY, keep="last")
    return rows.sort_values(KEY, kind="stable").reset_index(drop=True)


def method_order(methods) -> list[str]:
    """``none`` first, ``ieu`` second, the rest alphabetically."""
    first = [m for m in ("none", "ieu") if m in set(methods)]
    return first + sorted(set(methods) - set(first))


def summary_wide(results: pd.DataFrame) -> pd.DataFrame:
    """The IEU paper's main-table shape: one row per attack, CA and ASR (percent, mean over
    seeds) per method, for the methods that use no discovered subset."""
    rows = results[
        (results.discovery_share == NO_SHARE)
        & results.metric.isin(["clean_accuracy", "attack_success_rate"])
    ]
    if rows.empty:
        return pd.DataFrame({"attack": []})
    wide = rows.pivot_table(index="attack", columns=["method", "metric"], values="value") * 100
    columns = []
    for method in method_order(wide.columns.get_level_values(0)):
        for metric, label in (("clean_accuracy", "CA"), ("attack_success_rate", "ASR")):
            if (method, metric) in wide.columns:
                columns.append(((method, metric), f"{method} {label}"))
    table = wide[[c for c, _ in columns]]
    table.columns = [label for _, label in columns]
    seeds = rows.groupby("attack").seed.nunique().rename("seeds")
    return table.join(seeds).reset_index()


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table; floats rounded to ``digits`` decimals, NaN blank."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(map(str, table.columns)) + " |",
        "|" + "---|" * len(table.columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"
