"""Tables for the report: the current rows of a run, its main table and Potion's Table 1,
every number a mean with its 95% interval and N (``reporting.stats``)."""

from __future__ import annotations

import io
import logging
import math
from importlib import resources

import pandas as pd

from ieu_potion.reporting.stats import aggregate, overlap, with_interval
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


def versus_none(table: pd.DataFrame, column: str) -> list[str]:
    """Per row of a table with ``namespace``, ``method``, ``column`` and ``column ±95%``:
    whether the method's interval overlaps that of doing nothing (``none``) on the same
    namespace: 'overlap' (not resolved from doing nothing), 'apart', or blank (``none``
    itself, or N = 1 without an interval)."""
    undefended = table[table.method == "none"].set_index("namespace")
    return [
        ""
        if row.method == "none" or row.namespace not in undefended.index
        else overlap(
            row[column],
            row[f"{column} ±95%"],
            undefended.at[row.namespace, column],
            undefended.at[row.namespace, f"{column} ±95%"],
        )
        for _, row in table.iterrows()
    ]


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
    for _, label in MAIN_METRICS:
        table[f"{label} vs none"] = versus_none(table, label)
    left_out = stats[[f"{m}_left_out" for m in metrics if f"{m}_left_out" in stats]].max(axis=1)
    table["note"] = [
        f"{int(k)} seed{'s' if k != 1 else ''} without a finite value, left out of N" if k else ""
        for k in left_out
    ]
    if "not_applicable" in frame:
        skipped = frame.groupby(["namespace", "method"]).not_applicable.max() == 1
        for namespace, method in skipped[skipped].index:
            rows = (table.namespace == namespace) & (table.method == method)
            table.loc[rows, "note"] = "not applicable to this robust module"
    return sort_methods(table).reset_index(drop=True)


def without_left_out(stats: pd.DataFrame, column: str = "left out") -> pd.DataFrame:
    """``stats`` (from ``aggregate``) with its ``*_left_out`` counts folded into one
    ``column``: the most rows any metric of a group left out for lack of a finite value."""
    counts = [c for c in stats if c.endswith("_left_out")]
    stats = stats.assign(**{column: stats[counts].max(axis=1) if counts else 0})
    return stats.drop(columns=counts)


POTION_METRICS = ["poison_healed", "model_damage"]


def ptn_searches(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by`` among the ``per_seed`` rows of PTN searches (those with a
    ``ptn_converged`` value): ``searches`` their number and ``gave_up`` those that stopped
    at a bound; groups without a search are absent."""
    if "ptn_converged" not in frame:
        none = pd.MultiIndex.from_arrays([[] for _ in by], names=by)
        return pd.DataFrame({"gave_up": [], "searches": []}, index=none)
    converged = frame.dropna(subset=["ptn_converged"]).groupby(by).ptn_converged
    return pd.DataFrame(
        {"gave_up": converged.agg(lambda c: int((c == 0).sum())), "searches": converged.size()}
    )


def share_averages(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (namespace, attack, method, seed): poison healed and model damage averaged over
    the benchmark shares (``share_*``) the method ran on, ``shares`` their number, and
    ``gave_up`` of ``searches`` the PTN searches among them that stopped at a bound (NaN
    for other methods).  Shares are nested subsets of one model's poison, not repetitions,
    so intervals are taken over these per-seed averages, never over shares."""
    frame = per_seed(rows, shares=True)
    by = ["namespace", "attack", "method", "seed"]
    if frame.empty or "poison_healed" not in frame:
        return pd.DataFrame(columns=[*by, *POTION_METRICS, "shares", "gave_up", "searches"])
    frame = frame[frame.discovery_share.str.startswith("share_")]
    grouped = frame.groupby(by)
    out = grouped[[c for c in POTION_METRICS if c in frame]].mean()
    out["shares"] = grouped.discovery_share.nunique()
    return out.join(ptn_searches(frame, by).astype(float)).reset_index()


def share_fraction(share: str) -> float:
    return float(share.removeprefix("share_")) if share.startswith("share_") else math.nan


def potion_shares(results: pd.DataFrame) -> pd.DataFrame:
    """Per (namespace, method, benchmark share): healed and damage, mean and 95% interval
    over seeds, the share as a fraction, and the PTN searches at that share that gave up
    (``gave_up`` of ``searches``; 0 of 0 for methods without a search)."""
    frame = per_seed(results, shares=True)
    if frame.empty or "poison_healed" not in frame:
        return pd.DataFrame()
    frame = frame[frame.discovery_share.str.startswith("share_")]
    if frame.empty:
        return pd.DataFrame()
    by = ["namespace", "method", "discovery_share"]
    stats = aggregate(frame, by, POTION_METRICS)
    stats["fraction"] = stats.discovery_share.map(share_fraction)
    counts = stats.join(ptn_searches(frame, by), on=by)[["gave_up", "searches"]]
    return stats.assign(**counts.fillna(0).astype(int))


def share_table(results: pd.DataFrame) -> pd.DataFrame:
    """Healed (percent) and damage (points) per attack namespace and method with the
    benchmark shares as columns, each cell the mean and 95% interval over seeds at that
    share (shares are nested subsets of one model's poison, so they are columns here and
    never pooled into an interval), ``[k gave up]`` where k of its PTN searches stopped at
    a bound and left the model unchanged."""
    stats = potion_shares(results)
    if stats.empty:
        return pd.DataFrame({"namespace": []})
    stats = stats.sort_values("fraction", kind="stable")
    shares = [f"{f:g}" for f in dict.fromkeys(stats.fraction)]
    rows = []
    for (namespace, method), part in stats.groupby(["namespace", "method"], sort=False):
        for metric, label, scale in (
            ("poison_healed", "healed %", 100),
            ("model_damage", "damage pp", 1),
        ):
            row = {
                "namespace": namespace,
                "method": method,
                "metric": label,
                "N (seeds)": int(part[f"{metric}_n"].max()),
            }
            for r in part.itertuples():
                cell = with_interval(getattr(r, metric), getattr(r, f"{metric}_ci95"), scale)
                row[f"{r.fraction:g}"] = cell + (f" [{r.gave_up} gave up]" if r.gave_up else "")
            rows.append(row)
    table = pd.DataFrame(rows, columns=["namespace", "method", "metric", "N (seeds)", *shares])
    return sort_methods(table).reset_index(drop=True).fillna("")


def potion_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The Potion paper's Table 1: per attack namespace and method, poison healed and model
    damage averaged over the benchmark shares, as mean and 95% interval over seeds (N
    seeds; ``shares`` says how many shares each seed's average covers); the one-shot set
    and realistic discovery (IEU's gate) in columns of their own, over seeds (NaN where a
    method did not run on them).  For PTN methods, ``PTN gave up`` counts the searches
    (every share, one-shot and realistic included) that stopped at a bound without
    reaching rho a_0 and so left the model unchanged: such a search counts in the
    averages as the unchanged model it returns (healed as none, damage 0)."""
    frame = per_seed(rows, shares=True)
    if frame.empty or "poison_healed" not in frame:
        return pd.DataFrame({"namespace": []})
    by = ["namespace", "attack", "method"]
    means = share_averages(rows)
    table = without_left_out(aggregate(means, by, POTION_METRICS)).rename(
        columns={
            "poison_healed": "healed",
            "poison_healed_ci95": "healed ±95%",
            "model_damage": "damage",
            "model_damage_ci95": "damage ±95%",
            "poison_healed_n": "N (seeds)",
        }
    )
    table = table.drop(columns=["model_damage_n"], errors="ignore")
    if not means.empty:
        table = table.merge(means.groupby(by).shares.max().reset_index(), on=by, how="left")
    first = [*by, "N (seeds)", "shares"]
    table = table[[c for c in first if c in table] + [c for c in table if c not in first]]
    for share, prefix in ((ONE_SHOT, "one-shot"), (REALISTIC, "realistic")):
        apart = aggregate(frame[frame.discovery_share == share], by, POTION_METRICS)
        if apart.empty:
            continue
        apart = (
            without_left_out(apart, f"{prefix} left out")
            .rename(
                columns={
                    "poison_healed": f"{prefix} healed",
                    "poison_healed_ci95": f"{prefix} healed ±95%",
                    "model_damage": f"{prefix} damage",
                    "model_damage_ci95": f"{prefix} damage ±95%",
                    "poison_healed_n": f"{prefix} N (seeds)",
                }
            )
            .drop(columns=["model_damage_n"], errors="ignore")
        )
        table = table.merge(apart, on=by, how="outer") if len(table) else apart
    if "ptn_converged" in frame:
        ptn = ptn_searches(frame, by).rename(
            columns={"gave_up": "PTN gave up", "searches": "PTN searches"}
        )
        table = table.merge(ptn.reset_index(), on=by, how="left")
    table["healed vs none"] = versus_none(table, "healed")
    table["undefended ASR per seed"] = table.namespace.map(undefended_asr(rows)).where(
        table.method == "none", ""
    )
    counts = [
        c
        for c in table
        if c.startswith(("N", "PTN"))
        or " N " in c
        or c in ("seeds", "shares")
        or c.endswith("left out")
    ]
    return table.astype({c: "Int64" for c in counts}).reset_index(drop=True)


def undefended_asr(rows: pd.DataFrame) -> dict[str, str]:
    """Per namespace, the undefended model's ASR at each seed as text ("61.5%, 1.2%"): a
    seed whose model never learnt the trigger has nothing for Potion to heal."""
    frame = per_seed(rows, shares=False)
    if frame.empty or "attack_success_rate" not in frame:
        return {}
    frame = frame[frame.method == "none"].sort_values("seed")
    return {
        namespace: ", ".join(f"{100 * v:.1f}%" for v in part.attack_success_rate)
        for namespace, part in frame.groupby("namespace")
    }


PUBLISHED = "published/potion_table1.csv"


def published_potion() -> pd.DataFrame:
    """The Potion paper's Table 1 (CIFAR-10) as shipped in ``reporting/published``."""
    text = resources.files("ieu_potion.reporting").joinpath(PUBLISHED).read_text("utf-8")
    return pd.read_csv(io.StringIO(text))


def paper_method(method: str) -> str:
    """The row of the paper's table a method of ours stands beside (every SSD alpha
    beside the paper's SSD)."""
    return "ssd" if method.startswith("ssd_alpha_") else method


def reproduction_table(rows: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """``potion_table`` with the paper's published values beside each method: healed and
    damage averaged over shares 10%-100% and the one-shot ones (``paper ...`` columns;
    blank where the paper has no such method)."""
    table = potion_table(rows)
    if table.empty:
        return table
    keys = table.method.map(paper_method)
    for discovery, prefix in (("shares_0.1_to_1", "paper"), (ONE_SHOT, "paper one-shot")):
        part = published[published.discovery == discovery].set_index("method")
        table[f"{prefix} healed"] = keys.map(part.poison_healed)
        table[f"{prefix} damage"] = keys.map(part.model_damage)
    return table


# The paper's orderings (Table 1): (metric, better method, worse method).
PAPER_ORDERINGS = (
    ("poison_healed", "xlf_ptn", "ssd_ptn"),
    ("poison_healed", "ssd_ptn", "eu"),
    ("poison_healed", "eu", "none"),
    ("model_damage", "xlf_ptn", "ssd_ptn"),
    ("model_damage", "xlf_ptn", "ssd"),
)


def orderings(rows: pd.DataFrame) -> pd.DataFrame:
    """Whether each of the paper's orderings holds per namespace, on the per-seed averages
    over shares: ``holds`` (the intervals are apart in the paper's direction),
    ``reversed`` (apart the other way), ``not resolved`` (they overlap, or N = 1 gives no
    interval: ``ours`` shows the means), ``not run`` (a method is missing).  ``ssd`` is
    every SSD alpha of the run, each checked."""
    means = share_averages(rows)
    stats = aggregate(means, ["namespace", "method"], POTION_METRICS)
    out = []
    for namespace, part in stats.groupby("namespace"):
        part = part.set_index("method")
        for metric, better, worse in PAPER_ORDERINGS:
            worse_methods = (
                sorted(m for m in part.index if m.startswith("ssd_alpha_"))
                if worse == "ssd"
                else [worse]
            ) or [worse]
            for other in worse_methods:
                claim = f"{better} {'>' if metric == 'poison_healed' else '≥'} {other}"
                what = "healed" if metric == "poison_healed" else "damage"
                if better not in part.index or other not in part.index:
                    out.append((namespace, what, claim, "", "not run"))
                    continue
                a, b = part.loc[better], part.loc[other]
                scale, unit = (100, "%") if metric == "poison_healed" else (1, " pp")
                ours = f"{scale * a[metric]:.1f}{unit} vs {scale * b[metric]:.1f}{unit}"
                out.append((namespace, what, claim, ours, verdict(a, b, metric, higher=True)))
    return pd.DataFrame(out, columns=["namespace", "metric", "paper's ordering", "ours", "verdict"])


def verdict(a: pd.Series, b: pd.Series, metric: str, higher: bool) -> str:
    """Whether ``a`` is better than ``b`` on ``metric`` (higher or lower is better) by
    their 95% intervals (``aggregate``'s ``<metric>`` and ``<metric>_ci95``): ``holds``
    where the intervals are apart in that direction, ``reversed`` where apart the other
    way, ``not resolved`` where they overlap or N = 1 gives no interval."""
    side = overlap(a[metric], a[f"{metric}_ci95"], b[metric], b[f"{metric}_ci95"])
    if side != "apart":
        return "not resolved"
    return "holds" if (a[metric] > b[metric]) == higher else "reversed"


# An attack counts in the IEU comparison's averages where the undefended model learnt it
# (the benchmark's bar: mean undefended ASR over seeds at least this).
LEARNT_ASR = 0.8
PUBLISHED_IEU = "published/ieu_main_averages.csv"


def published_ieu() -> pd.DataFrame:
    """The IEU paper's main-table averages as shipped in ``reporting/published``."""
    text = resources.files("ieu_potion.reporting").joinpath(PUBLISHED_IEU).read_text("utf-8")
    return pd.read_csv(io.StringIO(text))


def learnt_attacks(frame: pd.DataFrame) -> tuple[list[str], dict[str, float]]:
    """(namespaces whose undefended mean ASR over seeds reaches ``LEARNT_ASR``, the mean
    undefended ASR of the others), from the ``per_seed`` rows without a share."""
    if frame.empty or "attack_success_rate" not in frame:
        return [], {}
    undefended = frame[frame.method == "none"].groupby("namespace").attack_success_rate.mean()
    learnt = sorted(undefended.index[undefended >= LEARNT_ASR])
    return learnt, {ns: float(v) for ns, v in undefended.items() if ns not in learnt}


def attack_averages(frame: pd.DataFrame, learnt: list[str]) -> pd.DataFrame:
    """Per method and seed, CA and ASR averaged over the ``learnt`` attacks (``frame``:
    the ``per_seed`` rows without a share); a seed at which a method misses one of them,
    or has no finite value for it, has no average of that metric (NaN, left out of N and
    counted) rather than an average over fewer attacks."""
    if not learnt:
        return pd.DataFrame(columns=["method", "seed", *(m for m, _ in MAIN_METRICS)])
    every = pd.MultiIndex.from_product(
        [sorted(set(frame.method)), sorted(set(frame.seed))], names=["method", "seed"]
    )
    frame = frame[frame.namespace.isin(learnt)]
    metrics = [m for m, _ in MAIN_METRICS]
    values = frame[["method", "seed", *metrics]].replace([math.inf, -math.inf], math.nan)
    grouped = values.groupby(["method", "seed"])
    means = grouped[metrics].mean()
    # count() is of finite values; one attack per (method, seed) row of ``per_seed``
    return means.where(grouped[metrics].count() == len(learnt)).reindex(every).reset_index()


def ieu_reproduction(results: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """The IEU paper's comparison: per method, CA and ASR (percent) averaged over the
    attacks the undefended model learnt, mean and 95% interval over seeds (N seeds),
    beside the paper's averages per data set (``paper <dataset> CA/ASR``; blank where it
    gives none).  The attacks left out and their undefended ASR are in ``not learnt``."""
    frame = per_seed(results, shares=False)
    learnt, others = learnt_attacks(frame)
    unlearnt = ", ".join(f"{ns} ({100 * v:.1f}%)" for ns, v in others.items())
    if not learnt:
        return pd.DataFrame(
            {"not learnt": [unlearnt or "no undefended model in this run"], "attacks": [0]}
        )
    metrics = [m for m, _ in MAIN_METRICS]
    stats = without_left_out(aggregate(attack_averages(frame, learnt), ["method"], metrics))
    table = pd.DataFrame({"method": stats.method, "N (seeds)": stats["clean_accuracy_n"]})
    table["attacks"] = len(learnt)
    for metric, label in MAIN_METRICS:
        table[label] = 100 * stats[metric]
        table[f"{label} ±95%"] = 100 * stats[f"{metric}_ci95"]
    table["left out"] = stats["left out"]
    table["not learnt"] = unlearnt
    for dataset, part in published.groupby("dataset", sort=False):
        part = part.set_index("method")
        for metric, label in MAIN_METRICS:
            table[f"paper {dataset} {label}"] = table.method.map(part[metric])
    return table.set_index("method").loc[method_order(table.method)].reset_index()


def ieu_orderings(results: pd.DataFrame) -> pd.DataFrame:
    """The IEU paper's claims on the averages over learnt attacks: IEU's ASR below, and
    its CA above, every other defence's, each ``holds``, ``reversed`` or ``not
    resolved`` by the 95% intervals over seeds."""
    frame = per_seed(results, shares=False)
    means = attack_averages(frame, learnt_attacks(frame)[0])
    columns = ["metric", "paper's ordering", "ours", "verdict"]
    if means.empty or "ieu" not in set(means.method):
        return pd.DataFrame(columns=columns)
    stats = aggregate(means, ["method"], [m for m, _ in MAIN_METRICS]).set_index("method")
    out = []
    for other in [m for m in method_order(stats.index) if m not in ("ieu", "none")]:
        a, b = stats.loc["ieu"], stats.loc[other]
        for metric, label, higher in (
            ("attack_success_rate", "ASR", False),
            ("clean_accuracy", "CA", True),
        ):
            claim = f"ieu {'<' if not higher else '>'} {other}"
            ours = f"{100 * a[metric]:.1f}% vs {100 * b[metric]:.1f}%"
            out.append((label, claim, ours, verdict(a, b, metric, higher)))
    return pd.DataFrame(out, columns=columns)


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
