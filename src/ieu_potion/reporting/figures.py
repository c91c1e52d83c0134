"""The report's Plotly figures, each with a reading generated from its own numbers.

Every builder returns a figure whose ``layout.meta["reading"]`` holds one paragraph that
states what the figure shows for this run (computed, not canned), so the figure saved in
the catalog and the report that embeds it carry the same text.  Builders accept whatever
subset of attacks and methods a run produced; with nothing to show they return a figure
that says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ieu_potion.reporting.stats import aggregate, interval, overlap, with_interval
from ieu_potion.reporting.tables import (
    method_order,
    per_seed,
    potion_shares,
    share_averages,
    sort_methods,
)
from ieu_potion.results import split_replicate

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
CDF_POINTS = 400  # points per curve: enough for the shape, small enough for the report

# The report's own figures, in the report's order (each saved as ``<name>_figure``).
BUILT_IN = (
    "ca_asr",
    "gate_confidence_cdf",
    "gate_history",
    "healed_vs_share",
    "healed_vs_damage",
    "ptn_tradeoff",
    "timing",
)
# Figures added by users (docs/tutorials/add_a_report_figure.md): builders of the run's
# results rows, by name; the reporting pipeline gives each a node, and the report shows
# them after its own, in the order they were registered.
ADDED: dict[str, Callable[[pd.DataFrame], go.Figure]] = {}
FIGURE_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register_figure(builder: Callable[[pd.DataFrame], go.Figure]):
    """Add ``builder`` (the results rows, long format -> a figure with a reading) to the
    report under its function name; a decorator."""
    name = builder.__name__
    if not FIGURE_NAME.fullmatch(name):
        raise ValueError(f"a figure's name must match {FIGURE_NAME.pattern}, got {name!r}")
    if name in BUILT_IN or (name in ADDED and ADDED[name] is not builder):
        taken = ", ".join(repr(n) for n in (*BUILT_IN, *ADDED))
        raise ValueError(f"a report figure named {name!r} exists already; taken: {taken}")
    ADDED[name] = builder
    return builder


def with_reading(figure: go.Figure, title: str, reading: str) -> go.Figure:
    figure.update_layout(
        title=title, template="plotly_white", meta={"reading": reading}, margin={"t": 70}
    )
    return figure


def reading(figure: go.Figure) -> str:
    meta = figure.layout.meta
    return meta.get("reading", "") if isinstance(meta, dict) else ""


def nothing_to_show(title: str, why: str) -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return with_reading(figure, title, why)


def colours(names) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def error_bars(frame: pd.DataFrame, metric: str, share: bool = True) -> dict:
    """Plotly error bars for ``frame[metric]`` +- ``frame[<metric>_ci95]`` (none where N = 1);
    for a share (accuracy, precision) clipped to [0, 1], where the t interval may reach
    past what the quantity can be."""
    mean = frame[metric].to_numpy(float)
    half = np.nan_to_num(frame[f"{metric}_ci95"].to_numpy(float))
    high, low = mean + half, mean - half
    if share:
        high, low = np.clip(high, 0, 1), np.clip(low, 0, 1)
    return {
        "type": "data",
        "symmetric": False,
        "array": list(high - mean),
        "arrayminus": list(mean - low),
        "visible": True,
    }


def ca_asr(results: pd.DataFrame) -> go.Figure:
    title = "Clean accuracy and attack success rate per attack and method (mean, 95% CI)"
    frame = per_seed(results, shares=False)
    if frame.empty or "clean_accuracy" not in frame:
        return nothing_to_show(title, "No finetuning results (IEU or baselines) in this run.")
    stats = aggregate(frame, ["namespace", "method"], ["clean_accuracy", "attack_success_rate"])
    methods = method_order(stats.method)
    colour = colours(methods)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Clean accuracy", "Attack success rate"))
    for method in methods:
        part = stats[stats.method == method]
        for col, metric in ((1, "clean_accuracy"), (2, "attack_success_rate")):
            figure.add_bar(
                x=part.namespace,
                y=part[metric],
                error_y=error_bars(part, metric),
                name=method,
                legendgroup=method,
                showlegend=col == 1,
                marker_color=colour[method],
                customdata=part[f"{metric}_n"],
                hovertemplate="%{x}: %{y:.1%} (N=%{customdata})",
                row=1,
                col=col,
            )
    figure.update_yaxes(range=[0, 1.05], tickformat=".0%")
    sentences = []
    for namespace, part in stats.groupby("namespace"):
        by = part.set_index("method")
        described = [
            f"{m} CA {pct_ci(by.loc[m], 'clean_accuracy')} / ASR "
            f"{pct_ci(by.loc[m], 'attack_success_rate')}"
            for m in method_order(by.index)
        ]
        n = int(by.clean_accuracy_n.max())
        sentence = f"On {namespace} (N = {n} seed{'s' if n != 1 else ''}): " + ", ".join(described)
        if {"none", "ieu"} <= set(by.index):
            none, ieu = by.loc["none"], by.loc["ieu"]
            drop = none.attack_success_rate - ieu.attack_success_rate
            change = ieu.clean_accuracy - none.clean_accuracy
            verdict = overlap(
                ieu.clean_accuracy,
                ieu.clean_accuracy_ci95,
                none.clean_accuracy,
                none.clean_accuracy_ci95,
            )
            sentence += (
                f"; IEU lowers the mean ASR by {100 * drop:.1f} points and changes mean clean "
                f"accuracy by {100 * change:+.1f} points against the undefended finetune"
                + (f" (CA intervals {verdict})" if verdict else "")
            )
        sentences.append(sentence + ".")
    figure.update_layout(barmode="group", height=420)
    return with_reading(figure, title, " ".join(sentences))


def ci(row: pd.Series, metric: str, scale: float = 1.0, digits: int = 1) -> str:
    """``row[metric]`` with its interval (``<metric>_ci95``) as text."""
    return with_interval(row[metric], row[f"{metric}_ci95"], scale, digits)


def pct_ci(row: pd.Series, metric: str) -> str:
    """``row[metric]`` as a percentage with its interval."""
    return ci(row, metric, 100) + "%"


def by_namespace(per_replicate: dict[str, object]) -> dict[str, list]:
    """Group values keyed by ``<namespace>.seed_<s>`` by namespace (seed order kept)."""
    grouped: dict[str, list] = {}
    for replicate, value in per_replicate.items():
        grouped.setdefault(split_replicate(replicate)[0], []).append(value)
    return grouped


def confidence_cdf(confidences: dict[str, dict[str, np.ndarray]]) -> go.Figure:
    """ECDF of the poisoned module's confidence on clean and on poisoned training samples,
    pooled over seeds, with the threshold stage 2 used (each run's ``tau``: configured or
    chosen by ``tau: auto``); the reading gives per-seed statistics as mean and 95%
    interval."""
    title = "Poisoned-module confidence on clean vs poisoned training samples (CDF)"
    if not confidences:
        return nothing_to_show(title, "No IEU run in this run: no gate confidences to show.")
    grouped = by_namespace(confidences)
    colour = colours(grouped)
    figure = go.Figure()
    sentences = []
    for namespace, runs in grouped.items():
        conf = np.concatenate([np.asarray(r["confidence"], dtype=float) for r in runs])
        poisoned = np.concatenate([np.asarray(r["poisoned"], dtype=bool) for r in runs])
        for subset, dash in (("clean", "solid"), ("poisoned", "dash")):
            values = np.sort(conf[poisoned if subset == "poisoned" else ~poisoned])
            if len(values) == 0:
                continue
            keep = np.unique(np.linspace(0, len(values) - 1, CDF_POINTS).round().astype(int))
            figure.add_scatter(
                x=values[keep],
                y=(keep + 1) / len(values),
                mode="lines",
                name=f"{namespace}: {subset} ({len(values)})",
                line={"color": colour[namespace], "dash": dash},
            )

        stats = aggregate(
            pd.DataFrame([confidence_statistics(r) for r in runs]).assign(group=0),
            ["group"],
            ["tau", "median_clean", "median_poisoned", "above_poisoned", "above_clean"],
        ).iloc[0]
        sentences.append(
            f"On {namespace} (N = {len(runs)} seed{'s' if len(runs) != 1 else ''}, curves "
            f"pooled) the median confidence is {ci(stats, 'median_clean', digits=2)} on clean "
            f"samples and {ci(stats, 'median_poisoned', digits=2)} on poisoned ones; the "
            f"gate's threshold is tau = {ci(stats, 'tau', digits=3)}, above which lie "
            f"{pct_ci(stats, 'above_poisoned')} of the poisoned and "
            f"{pct_ci(stats, 'above_clean')} of the clean samples."
        )
        figure.add_vline(
            x=stats.tau,
            line_dash="dot",
            line_color=colour[namespace],
            annotation_text=f"tau {stats.tau:.3g}",
        )
    figure.update_layout(
        xaxis_title="max softmax of the poisoned module",
        yaxis_title="fraction of samples at or below",
        height=450,
    )
    return with_reading(figure, title, " ".join(sentences))


def confidence_statistics(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """One run's threshold, and medians and shares above it of its gate confidences,
    clean and poisoned."""
    tau = float(arrays["tau"])
    conf = np.asarray(arrays["confidence"], dtype=float)
    poisoned = np.asarray(arrays["poisoned"], dtype=bool)
    clean, bad = conf[~poisoned], conf[poisoned]
    return {
        "tau": tau,
        "median_clean": float(np.median(clean)) if len(clean) else math.nan,
        "median_poisoned": float(np.median(bad)) if len(bad) else math.nan,
        "above_clean": float((clean > tau).mean()) if len(clean) else math.nan,
        "above_poisoned": float((bad > tau).mean()) if len(bad) else math.nan,
    }


def gate_history(histories: dict[str, pd.DataFrame]) -> go.Figure:
    """Gate precision and recall after each epoch of stage 1 (the gate's training), mean
    and 95% interval over seeds."""
    title = "Poisoned-module precision and recall per training epoch (IEU stage 1)"
    usable = {a: h for a, h in histories.items() if {"gate_precision", "gate_recall"} <= set(h)}
    if not usable:
        return nothing_to_show(title, "No gate training history with precision/recall.")
    grouped = {ns: pd.concat(runs, ignore_index=True) for ns, runs in by_namespace(usable).items()}
    colour = colours(grouped)
    figure = go.Figure()
    sentences = []
    for namespace, history in grouped.items():
        stats = aggregate(history, ["epoch"], ["gate_precision", "gate_recall", "gate_flagged"])
        for metric, dash in (("gate_precision", "solid"), ("gate_recall", "dash")):
            figure.add_scatter(
                x=stats.epoch,
                y=stats[metric],
                error_y=error_bars(stats, metric),
                mode="lines+markers",
                name=f"{namespace}: {metric.removeprefix('gate_')}",
                line={"color": colour[namespace], "dash": dash},
            )
        last = stats.iloc[-1]
        reach = stats[stats.gate_recall >= 0.9 * last.gate_recall].epoch.min()
        n = int(last.gate_recall_n)
        sentences.append(
            f"On {namespace} (N = {n} seed{'s' if n != 1 else ''}) the gate ends epoch "
            f"{int(last.epoch)} at precision {pct_ci(last, 'gate_precision')} and recall "
            f"{pct_ci(last, 'gate_recall')} ({ci(last, 'gate_flagged', digits=0)} "
            f"samples flagged); mean recall first reaches 90% of its final value at epoch "
            f"{int(reach)}."
        )
        if "kept" in history:
            kept = history[history.kept.astype(bool)]
            sentences.append(
                f"Stage 2 used the gate of epoch {', '.join(map(str, kept.epoch.tolist()))} "
                "(per seed), at precision "
                f"{', '.join(f'{v:.1%}' for v in kept.gate_precision)} and recall "
                f"{', '.join(f'{v:.1%}' for v in kept.gate_recall)}."
            )
    figure.update_layout(xaxis_title="epoch", yaxis_tickformat=".0%", height=420)
    return with_reading(figure, title, " ".join(sentences))


def healed_vs_share(results: pd.DataFrame) -> go.Figure:
    title = "Poison healed against the discovered share of the poison (mean, 95% CI)"
    frame = potion_shares(results)
    if frame.empty:
        return nothing_to_show(title, "No Potion benchmark shares in this run.")
    namespaces = sorted(frame.namespace.unique())
    methods = method_order(frame.method)
    colour = colours(methods)
    figure = make_subplots(
        rows=1, cols=len(namespaces), subplot_titles=namespaces, shared_yaxes=True
    )
    sentences = []
    for col, namespace in enumerate(namespaces, start=1):
        part = frame[frame.namespace == namespace]
        for method in methods:
            line = part[part.method == method].sort_values("fraction")
            if line.empty:
                continue
            figure.add_scatter(
                x=line.fraction,
                y=line.poison_healed,
                error_y=error_bars(line, "poison_healed"),
                mode="lines+markers",
                name=method,
                legendgroup=method,
                showlegend=col == 1,
                line={"color": colour[method]},
                row=1,
                col=col,
            )
        n = int(part.poison_healed_n.max())
        said = [
            most_healed(part[part.fraction == f], f"with a share of {f:g} of the poison discovered")
            for f in sorted({part.fraction.min(), part.fraction.max()})
        ]
        sentences.append(
            f"On {namespace} (N = {n} seed{'s' if n != 1 else ''}): {'; '.join(said)}."
        )
    figure.update_xaxes(title="discovered share", type="log")
    figure.update_yaxes(range=[0, 1.05], tickformat=".0%")
    figure.update_yaxes(title="poison healed", col=1)
    figure.update_layout(height=420)
    return with_reading(figure, title, " ".join(sentences))


def most_healed(stats: pd.DataFrame, context: str, damage: bool = False) -> str:
    """What rows of one namespace (``potion_shares`` at one share, or share averages over
    seeds) say, after ``context``: the method that heals the most (with its damage if
    ``damage``), whether that is more than doing nothing (``none``'s interval), and which
    PTN searches gave up (``gave_up`` of ``searches``)."""
    best = stats.sort_values("poison_healed", kind="stable").iloc[-1]
    text = f"{context}, {best.method} heals the most ({pct_ci(best, 'poison_healed')}"
    text += f" at {ci(best, 'model_damage')} points)" if damage else ")"
    none = stats[stats.method == "none"]
    if best.method != "none" and len(none):
        base = none.iloc[0]
        side = overlap(
            best.poison_healed, best.poison_healed_ci95, base.poison_healed, base.poison_healed_ci95
        )
        if best.poison_healed <= base.poison_healed or side != "apart":
            text += (
                f", not resolved above doing nothing (none: {pct_ci(base, 'poison_healed')}; "
                "the intervals overlap or no interval exists)"
            )
    gave_up = stats[stats.gave_up > 0]
    if len(gave_up):
        text += "; PTN gave up (model unchanged) in " + ", ".join(
            f"{int(r.gave_up)} of {int(r.searches)} {r.method} searches"
            for r in gave_up.itertuples()
        )
    return text


def healed_vs_damage(results: pd.DataFrame) -> go.Figure:
    title = "Poison healed against model damage (per namespace, method and share; 95% CI)"
    frame = potion_shares(results)
    if frame.empty or "model_damage" not in frame:
        return nothing_to_show(title, "No Potion benchmark shares in this run.")
    frame = frame[frame.method != "none"]
    if frame.empty:
        return nothing_to_show(title, "No Potion method beside 'none' in this run.")
    methods = method_order(frame.method)
    colour = colours(methods)
    symbols = dict(
        zip(sorted(frame.namespace.unique()), ("circle", "square", "diamond", "x"), strict=False)
    )
    figure = go.Figure()
    for method in methods:
        part = frame[frame.method == method]
        figure.add_scatter(
            x=part.model_damage,
            y=part.poison_healed,
            error_x=error_bars(part, "model_damage", share=False),
            error_y=error_bars(part, "poison_healed"),
            mode="markers",
            name=method,
            marker={
                "color": colour[method],
                "size": 10,
                "symbol": [symbols.get(a, "circle") for a in part.namespace],
            },
            text=[f"{a} {s}" for a, s in zip(part.namespace, part.discovery_share, strict=True)],
            hovertemplate="%{text}<br>damage %{x:.1f} pp<br>healed %{y:.1%}",
        )
    sentences = []
    for namespace, means in share_averages(results).groupby("namespace"):
        stats = aggregate(means, ["method"], ["poison_healed", "model_damage"])
        stats = stats.join(means.groupby("method")[["gave_up", "searches"]].sum(), on="method")
        n = int(stats.poison_healed_n.max())
        context = f"On {namespace}, shares averaged per seed (N = {n} seed{'s' if n != 1 else ''})"
        said = most_healed(stats, context, damage=True)
        repair = stats[stats.method != "none"]
        if len(repair):
            gentlest = repair.loc[repair.model_damage.idxmax()]
            said += (
                f"; {gentlest.method} damages the model least ({ci(gentlest, 'model_damage')} "
                f"points, {pct_ci(gentlest, 'poison_healed')} healed)"
            )
        sentences.append(said + ".")
    sentences.append(
        "Marker shape is the namespace; error bars are 95% intervals over seeds at one share."
    )
    figure.add_vline(x=0, line_dash="dot")
    figure.update_layout(
        xaxis_title="model damage (clean accuracy change, points)",
        yaxis_title="poison healed",
        yaxis_tickformat=".0%",
        height=450,
    )
    return with_reading(figure, title, " ".join(sentences))


def ptn_tradeoff(results: pd.DataFrame, traces: dict[str, pd.DataFrame]) -> go.Figure:
    """Accuracy on S_f and clean accuracy along each PTN search that was scored on the test
    sets (``potion.tradeoff_shares``), one curve per seed, the chosen alpha marked."""
    title = "PTN trade-off: accuracy on the discovered set and clean accuracy against alpha"
    scored = {
        replicate: trace[trace.clean_accuracy.notna()]
        for replicate, trace in traces.items()
        if "clean_accuracy" in trace and trace.clean_accuracy.notna().any()
    }
    if not scored:
        return nothing_to_show(
            title, "No PTN search was scored on the test sets (potion.tradeoff_shares)."
        )
    seeded = {r: trace.assign(seed=split_replicate(r)[1]) for r, trace in scored.items()}
    grouped = {
        ns: pd.concat(runs, ignore_index=True) for ns, runs in sorted(by_namespace(seeded).items())
    }
    methods = method_order(pd.concat(grouped.values()).method)
    colour = colours(methods)
    namespaces = list(grouped)
    figure = make_subplots(
        rows=1, cols=len(namespaces), subplot_titles=namespaces, shared_yaxes=True
    )
    sentences = []
    for col, namespace in enumerate(namespaces, start=1):
        trace = grouped[namespace]
        for (method, share), runs in trace.groupby(["method", "share"], sort=False):
            chosen, unchanged, steps_taken = [], 0, []
            for seed, steps in runs.groupby("seed"):
                steps = steps.sort_values("step")
                steps_taken.append(int(steps.step.max()))  # the last step is always scored
                for metric, dash, label in (
                    ("forget_accuracy", "solid", "acc. on S_f"),
                    ("clean_accuracy", "dash", "clean acc."),
                ):
                    figure.add_scatter(
                        x=steps.alpha,
                        y=steps[metric],
                        mode="lines+markers",
                        name=f"{method} {label}",
                        legendgroup=method,
                        showlegend=bool(col == 1 and seed == runs.seed.min()),
                        line={"color": colour[method], "dash": dash, "width": 1.5},
                        marker={"size": 4},
                        hovertemplate=f"seed {seed}<br>alpha %{{x:.3g}}<br>%{{y:.1%}}",
                        row=1,
                        col=col,
                    )
                step = chosen_step(results, namespace, seed, method, share, steps)
                if step is None:
                    unchanged += 1
                    continue
                chosen.append(step)
                figure.add_scatter(
                    x=[step.alpha, step.alpha],
                    y=[step.forget_accuracy, step.clean_accuracy],
                    mode="markers",
                    marker={"symbol": "star", "size": 14, "color": colour[method]},
                    name=f"{method} chosen",
                    legendgroup=method,
                    showlegend=False,
                    hovertemplate=f"seed {seed}: chosen alpha %{{x:.3g}}<br>%{{y:.1%}}",
                    row=1,
                    col=col,
                )
            n = runs.seed.nunique()
            text = (
                f"{method} on {namespace} ({share}, N = {n} seed{'s' if n != 1 else ''}): "
                f"{with_interval(*interval(steps_taken)[:2], 1, 0)} steps"
            )
            if chosen:
                picked = pd.DataFrame(chosen)
                text += (
                    f"; at the chosen alpha accuracy on S_f is "
                    f"{with_interval(*interval(picked.forget_accuracy)[:2], 100)}% and clean "
                    f"accuracy {with_interval(*interval(picked.clean_accuracy)[:2], 100)}%"
                )
            if unchanged:
                text += f"; {unchanged} search(es) never met PTN's condition (model unchanged)"
            sentences.append(text + ".")
    figure.update_xaxes(title="alpha (selection threshold)", type="log", autorange="reversed")
    figure.update_yaxes(range=[0, 1.05], tickformat=".0%")
    figure.update_layout(height=450)
    return with_reading(figure, title, " ".join(sentences))


def chosen_step(results, namespace, seed, method, share, steps) -> pd.Series | None:
    """The trace step PTN returned: its last step if the search converged."""
    mask = (
        (results.namespace == namespace)
        & (results.seed == seed)
        & (results.method == method)
        & (results.discovery_share == share)
        & (results.metric == "ptn_converged")
    )
    converged = results[mask].value
    if converged.empty or converged.iloc[-1] < 1:
        return None
    return steps.iloc[-1]


def timing(results: pd.DataFrame) -> go.Figure:
    title = "Wall time per attack and method (mean and 95% interval over seeds)"
    rows = results[results.metric.isin(["seconds", "seconds_per_epoch"])]
    if rows.empty:
        return nothing_to_show(title, "No timings in this run.")
    per_run = rows.pivot_table(
        index=["namespace", "method", "seed"], columns="metric", values="value", aggfunc="median"
    ).reset_index()
    table = aggregate(per_run, ["namespace", "method"], ["seconds", "seconds_per_epoch"])
    for column in ("seconds", "seconds_per_epoch"):
        if column not in table:
            table[column] = math.nan
            table[f"{column}_ci95"] = math.nan
            table[f"{column}_n"] = 0
    table = sort_methods(table)
    figure = go.Figure(
        go.Table(
            header={
                "values": [
                    "namespace",
                    "method",
                    "N seeds",
                    "seconds (median over shares)",
                    "seconds per epoch",
                ]
            },
            cells={
                "values": [
                    table.namespace,
                    table.method,
                    table.seconds_n,
                    [
                        with_interval(m, h)
                        for m, h in zip(table.seconds, table.seconds_ci95, strict=True)
                    ],
                    [
                        "" if math.isnan(m) else with_interval(m, h, 1, 2)
                        for m, h in zip(
                            table.seconds_per_epoch, table.seconds_per_epoch_ci95, strict=True
                        )
                    ],
                ]
            },
        )
    )
    sentences = []
    per = table.set_index(["namespace", "method"])
    for namespace in table.namespace.unique():
        cell = {
            m: per.loc[(namespace, m)]
            for m in ("ieu", "none", "xlf_ptn", "eu")
            if (namespace, m) in per.index
        }
        if {"ieu", "none"} <= set(cell):
            ratio = cell["ieu"].seconds_per_epoch / cell["none"].seconds_per_epoch
            sentences.append(
                f"On {namespace} an IEU epoch takes {ratio:.2f}x an undefended one (means)."
            )
        if {"xlf_ptn", "eu"} <= set(cell):
            xlf, eu = cell["xlf_ptn"].seconds, cell["eu"].seconds
            sentences.append(
                f"On {namespace} XLF+PTN takes {xlf:.1f} s, {xlf / eu:.3f}x the {eu:.1f} s of "
                "EU retraining (means)."
            )
    if not sentences:
        slowest = table.sort_values("seconds").iloc[-1]
        sentences.append(
            f"The slowest step is {slowest.method} on {slowest.namespace} "
            f"({slowest.seconds:.1f} s on average)."
        )
    figure.update_layout(height=max(250, 40 + 28 * len(table)))
    return with_reading(figure, title, " ".join(sentences))
