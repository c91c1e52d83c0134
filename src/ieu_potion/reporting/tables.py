"""Tables for the report: the current rows of a run, its main table and Potion's Table 1,
every number a mean with its 95% interval and N (``reporting.stats``)."""

from __future__ import annotations

import logging
import math

import pandas as pd

from ieu_potion.reporting.stats import aggregate, overlap
from ieu_potion.results import (
    KEY_COLUMNS,
    NO_SHARE,
    ONE_SHOT,
    REALISTIC,
    RESULT_COLUMNS,
    check_rows,
)

log = logging.getLogger(__name__)


def current_rows(tables: list[pd.DataFrame], fingerprints: list[str]) -> pd.DataFrame:
    """The rows of ``tables`` that carry the fingerprint expected of each (the current
    configuration); rows of another configuration (left by a resumed run, say) are
    dropped with a warning."""
    kept = []
    for table, expected in zip(tables, fingerprints, strict=True):
        table = check_rows(table)
        stale = table.fingerprint != expected
        if stale.any():
            log.warning(
                "%d results rows of another configuration (fingerprint %s, now %s) are left "
                "out of the report; rerun their node to replace them",
                int(stale.sum()),
                ", ".join(sorted(set(table.fingerprint[stale]))),
                expected,
            )
        kept.append(table[~stale])
    if not kept:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    rows = pd.concat(kept, ignore_index=True)
    rows = rows.drop_duplicates(subset=list(KEY_COLUMNS), keep="last")
    return rows.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


def method_order(methods) -> list[str]:
    """``none`` first, ``ieu`` second, the rest alphabetically."""
    first = [m for m in ("none", "ieu") if m in set(methods)]
    return first + sorted(set(methods) - set(first))


def sort_methods(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by namespace, then methods in ``method_order``."""
    order = {m: i for i, m in enumerate(method_order(table.method))}
    return table.sort_values(
        ["namespace", "method"], key=lambda c: c.map(order) if c.name == "method" else c
    )


def per_seed(results: pd.DataFrame, shares: bool) -> pd.DataFrame:
    """One row per (namespace, attack, method, share, seed), one column per metric."""
    rows = results[(results.discovery_share != NO_SHARE) == shares]
    if rows.empty:
        return pd.DataFrame(columns=["namespace", "attack", "method", "discovery_share", "seed"])
    index = ["namespace", "attack", "method", "discovery_share", "seed"]
    wide = rows.groupby([*index, "metric"]).value.mean().unstack("metric")
    return wide.reset_index().rename_axis(columns=None)


MAIN_METRICS = (("clean_accuracy", "CA"), ("attack_success_rate", "ASR"))


def main_table(results: pd.DataFrame) -> pd.DataFrame:
    """The IEU paper's main table: per attack namespace and method (those that use no
    discovered subset), CA and ASR in percent, mean and 95% interval over seeds, N; and
    for each method beside ``none`` whether its interval overlaps the undefended one's
    ('overlap': the difference is not resolved; 'apart'; blank with N = 1).  A method that
    does not apply to the run's robust module (AttnBlock without a ViT) stays in the
    table, without numbers, and its ``note`` says so."""
    frame = per_seed(results, shares=False)
    metrics = [m for m, _ in MAIN_METRICS]
    if frame.empty or "clean_accuracy" not in frame:
        return pd.DataFrame({"namespace": []})
    stats = aggregate(frame, ["namespace", "attack", "method"], metrics)
    table = pd.DataFrame(
        {"namespace": stats.namespace, "attack": stats.attack, "method": stats.method}
    )
    table["N"] = stats["clean_accuracy_n"]
    for metric, label in MAIN_METRICS:
        table[label] = 100 * stats.get(metric, math.nan)
        table[f"{label} ±95%"] = 100 * stats.get(f"{metric}_ci95", math.nan)
    undefended = table[table.method == "none"].set_index("namespace")
    for _, label in MAIN_METRICS:
        table[f"{label} vs none"] = [
            ""
            if row.method == "none" or row.namespace not in undefended.index
            else overlap(
                row[label],
                row[f"{label} ±95%"],
                undefended.at[row.namespace, label],
                undefended.at[row.namespace, f"{label} ±95%"],
            )
            for _, row in table.iterrows()
        ]
    table["note"] = ""
    if "not_applicable" in frame:
        skipped = frame.groupby(["namespace", "method"]).not_applicable.max() == 1
        for namespace, method in skipped[skipped].index:
            rows = (table.namespace == namespace) & (table.method == method)
            table.loc[rows, "note"] = "not applicable to this robust module"
    return sort_methods(table).reset_index(drop=True)


def potion_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The Potion paper's Table 1: per attack namespace and method, poison healed and model
    damage as mean and 95% interval over every (seed, benchmark share) pair, with N the
    number of pairs; the one-shot set and realistic discovery (IEU's gate) in columns of
    their own, over seeds (NaN where a method did not run on them).  For PTN methods,
    ``PTN gave up`` counts the searches (every share, one-shot and realistic included)
    that stopped at a bound without reaching rho a_0 and so left the model unchanged."""
    frame = per_seed(rows, shares=True)
    columns = ["poison_healed", "model_damage"]
    if frame.empty or "poison_healed" not in frame:
        return pd.DataFrame({"namespace": []})
    by = ["namespace", "attack", "method"]
    shares = frame[frame.discovery_share.str.startswith("share_")]
    table = aggregate(shares, by, columns).rename(
        columns={
            "poison_healed": "healed",
            "poison_healed_ci95": "healed ±95%",
            "model_damage": "damage",
            "model_damage_ci95": "damage ±95%",
            "poison_healed_n": "N (seeds x shares)",
        }
    )
    table = table.drop(columns=["model_damage_n"], errors="ignore")
    if not shares.empty:
        counts = shares.groupby(by).agg(
            seeds=("seed", "nunique"), shares=("discovery_share", "nunique")
        )
        table = table.merge(counts.reset_index(), on=by, how="left")
    first = [*by, "N (seeds x shares)", "seeds", "shares"]
    table = table[[c for c in first if c in table] + [c for c in table if c not in first]]
    for share, prefix in ((ONE_SHOT, "one-shot"), (REALISTIC, "realistic")):
        apart = aggregate(frame[frame.discovery_share == share], by, columns)
        if apart.empty:
            continue
        apart = apart.rename(
            columns={
                "poison_healed": f"{prefix} healed",
                "poison_healed_ci95": f"{prefix} healed ±95%",
                "model_damage": f"{prefix} damage",
                "model_damage_ci95": f"{prefix} damage ±95%",
                "poison_healed_n": f"{prefix} N (seeds)",
            }
        ).drop(columns=["model_damage_n"], errors="ignore")
        table = table.merge(apart, on=by, how="outer") if len(table) else apart
    if "ptn_converged" in frame:
        searches = frame.dropna(subset=["ptn_converged"]).groupby(by).ptn_converged
        ptn = pd.DataFrame(
            {"PTN gave up": searches.agg(lambda c: (c == 0).sum()), "PTN searches": searches.size()}
        )
        table = table.merge(ptn.reset_index(), on=by, how="left")
    counts = [
        c for c in table if c.startswith(("N", "PTN")) or " N " in c or c in ("seeds", "shares")
    ]
    return table.astype({c: "Int64" for c in counts}).reset_index(drop=True)


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table; floats rounded to ``digits`` decimals, NaN blank."""

    def cell(value) -> str:
        if value is pd.NA:
            return ""
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(map(str, table.columns)) + " |",
        "|" + "---|" * len(table.columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"
