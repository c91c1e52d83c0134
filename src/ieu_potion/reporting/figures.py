"""The report's Plotly figures, each with a reading generated from its own numbers.

Every builder returns a figure whose ``layout.meta["reading"]`` holds one paragraph that
states what the figure shows for this run (computed, not canned), so the figure saved in
the catalog and the report that embeds it carry the same text.  Builders accept whatever
subset of attacks and methods a run produced; with nothing to show they return a figure
that says so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ieu_potion.reporting.results import NO_SHARE
from ieu_potion.reporting.tables import method_order

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


def metric_frame(results: pd.DataFrame, shares: bool) -> pd.DataFrame:
    """Mean over seeds, one row per (attack, method, share), one column per metric."""
    rows = results[(results.discovery_share != NO_SHARE) == shares]
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(
        index=["attack", "method", "discovery_share"], columns="metric", values="value"
    ).reset_index()


def ca_asr(results: pd.DataFrame) -> go.Figure:
    title = "Clean accuracy and attack success rate per attack and method"
    frame = metric_frame(results, shares=False)
    if frame.empty or "clean_accuracy" not in frame:
        return nothing_to_show(title, "No finetuning results (IEU or baselines) in this run.")
    methods = method_order(frame.method)
    colour = colours(methods)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Clean accuracy", "Attack success rate"))
    for method in methods:
        part = frame[frame.method == method]
        for col, metric in ((1, "clean_accuracy"), (2, "attack_success_rate")):
            figure.add_bar(
                x=part.attack,
                y=part[metric],
                name=method,
                legendgroup=method,
                showlegend=col == 1,
                marker_color=colour[method],
                row=1,
                col=col,
            )
    figure.update_yaxes(range=[0, 1], tickformat=".0%")
    sentences = []
    for attack, part in frame.groupby("attack"):
        by = part.set_index("method")
        described = [
            f"{m} CA {pct(by.at[m, 'clean_accuracy'])} / ASR {pct(by.at[m, 'attack_success_rate'])}"
            for m in method_order(by.index)
        ]
        sentence = f"On {attack}: " + ", ".join(described)
        if {"none", "ieu"} <= set(by.index):
            drop = by.at["none", "attack_success_rate"] - by.at["ieu", "attack_success_rate"]
            change = by.at["ieu", "clean_accuracy"] - by.at["none", "clean_accuracy"]
            sentence += (
                f"; IEU lowers the ASR by {100 * drop:.1f} points and changes clean accuracy "
                f"by {100 * change:+.1f} points against the undefended finetune"
            )
        sentences.append(sentence + ".")
    figure.update_layout(barmode="group", height=420)
    return with_reading(figure, title, " ".join(sentences))


def confidence_cdf(confidences: dict[str, dict[str, np.ndarray]], tau: float) -> go.Figure:
    """ECDF of the poisoned module's confidence on clean and on poisoned training samples."""
    title = "Poisoned-module confidence on clean vs poisoned training samples (CDF)"
    if not confidences:
        return nothing_to_show(title, "No IEU run in this run: no gate confidences to show.")
    colour = colours(confidences)
    figure = go.Figure()
    sentences = []
    for attack, arrays in confidences.items():
        conf = np.asarray(arrays["confidence"], dtype=float)
        poisoned = np.asarray(arrays["poisoned"], dtype=bool)
        for subset, dash in (("clean", "solid"), ("poisoned", "dash")):
            values = np.sort(conf[poisoned if subset == "poisoned" else ~poisoned])
            if len(values) == 0:
                continue
            keep = np.unique(np.linspace(0, len(values) - 1, CDF_POINTS).round().astype(int))
            figure.add_scatter(
                x=values[keep],
                y=(keep + 1) / len(values),
                mode="lines",
                name=f"{attack}: {subset} ({len(values)})",
                line={"color": colour[attack], "dash": dash},
            )
        clean, bad = conf[~poisoned], conf[poisoned]
        sentences.append(
            f"On {attack} the median confidence is {np.median(clean):.2f} on "
            f"{len(clean)} clean samples and {np.median(bad) if len(bad) else math.nan:.2f} on "
            f"{len(bad)} poisoned ones; above tau = {tau:g} lie {pct((bad > tau).mean())} of "
            f"the poisoned and {pct((clean > tau).mean())} of the clean samples."
        )
    figure.add_vline(x=tau, line_dash="dot", annotation_text=f"tau {tau:g}")
    figure.update_layout(
        xaxis_title="max softmax of the poisoned module",
        yaxis_title="fraction of samples at or below",
        height=450,
    )
    return with_reading(figure, title, " ".join(sentences))


def gate_history(histories: dict[str, pd.DataFrame]) -> go.Figure:
    """Gate precision and recall after each epoch of stage 1 (the gate's training)."""
    title = "Poisoned-module precision and recall per training epoch (IEU stage 1)"
    usable = {a: h for a, h in histories.items() if {"gate_precision", "gate_recall"} <= set(h)}
    if not usable:
        return nothing_to_show(title, "No gate training history with precision/recall.")
    colour = colours(usable)
    figure = go.Figure()
    sentences = []
    for attack, history in usable.items():
        for metric, dash in (("gate_precision", "solid"), ("gate_recall", "dash")):
            figure.add_scatter(
                x=history.epoch,
                y=history[metric],
                mode="lines+markers",
                name=f"{attack}: {metric.removeprefix('gate_')}",
                line={"color": colour[attack], "dash": dash},
            )
        last = history.iloc[-1]
        reach = history[history.gate_recall >= 0.9 * last.gate_recall].epoch.min()
        sentences.append(
            f"On {attack} the gate ends epoch {int(last.epoch)} at precision "
            f"{pct(last.gate_precision)} and recall {pct(last.gate_recall)} "
            f"({int(last.gate_flagged)} samples flagged); recall first reaches 90% of its "
            f"final value at epoch {int(reach)}."
        )
    figure.update_layout(xaxis_title="epoch", yaxis_tickformat=".0%", height=420)
    return with_reading(figure, title, " ".join(sentences))


def share_fraction(share: str) -> float:
    return float(share.removeprefix("share_")) if share.startswith("share_") else math.nan


def potion_shares(results: pd.DataFrame) -> pd.DataFrame:
    frame = metric_frame(results, shares=True)
    if frame.empty or "poison_healed" not in frame:
        return pd.DataFrame()
    frame["fraction"] = frame.discovery_share.map(share_fraction)
    return frame


def healed_vs_share(results: pd.DataFrame) -> go.Figure:
    title = "Poison healed against the discovered share of the poison"
    frame = potion_shares(results)
    frame = frame[frame.fraction.notna()] if not frame.empty else frame
    if frame.empty:
        return nothing_to_show(title, "No Potion benchmark shares in this run.")
    attacks = sorted(frame.attack.unique())
    methods = method_order(frame.method)
    colour = colours(methods)
    figure = make_subplots(rows=1, cols=len(attacks), subplot_titles=attacks, shared_yaxes=True)
    sentences = []
    for col, attack in enumerate(attacks, start=1):
        part = frame[frame.attack == attack]
        for method in methods:
            line = part[part.method == method].sort_values("fraction")
            if line.empty:
                continue
            figure.add_scatter(
                x=line.fraction,
                y=line.poison_healed,
                mode="lines+markers",
                name=method,
                legendgroup=method,
                showlegend=col == 1,
                line={"color": colour[method]},
                row=1,
                col=col,
            )
        low, high = part.fraction.min(), part.fraction.max()
        best_low = part[part.fraction == low].sort_values("poison_healed").iloc[-1]
        best_high = part[part.fraction == high].sort_values("poison_healed").iloc[-1]
        sentences.append(
            f"On {attack}, with a share of {low:g} of the poison discovered the most healed "
            f"is {best_low.method} ({pct(best_low.poison_healed)}); with a share of "
            f"{high:g}, {best_high.method} ({pct(best_high.poison_healed)})."
        )
    figure.update_xaxes(title="discovered share", type="log")
    figure.update_yaxes(range=[0, 1], tickformat=".0%")
    figure.update_yaxes(title="poison healed", col=1)
    figure.update_layout(height=420)
    return with_reading(figure, title, " ".join(sentences))


def healed_vs_damage(results: pd.DataFrame) -> go.Figure:
    title = "Poison healed against model damage (one point per attack, method and share)"
    frame = potion_shares(results)
    if frame.empty or "model_damage" not in frame:
        return nothing_to_show(title, "No Potion results in this run.")
    # Benchmark shares only: one-shot and realistic discovery have their own table columns.
    frame = frame[(frame.method != "none") & frame.fraction.notna()]
    if frame.empty:
        return nothing_to_show(title, "No Potion benchmark shares in this run.")
    methods = method_order(frame.method)
    colour = colours(methods)
    symbols = dict(
        zip(sorted(frame.attack.unique()), ("circle", "square", "diamond", "x"), strict=False)
    )
    figure = go.Figure()
    for method in methods:
        part = frame[frame.method == method]
        figure.add_scatter(
            x=part.model_damage,
            y=part.poison_healed,
            mode="markers",
            name=method,
            marker={
                "color": colour[method],
                "size": 10,
                "symbol": [symbols.get(a, "circle") for a in part.attack],
            },
            text=[f"{a} {s}" for a, s in zip(part.attack, part.discovery_share, strict=True)],
            hovertemplate="%{text}<br>damage %{x:.1f} pp<br>healed %{y:.1%}",
        )
    means = frame.groupby("method")[["poison_healed", "model_damage"]].mean()
    best = means.poison_healed.idxmax()
    gentlest = means.model_damage.idxmax()
    reading_text = (
        f"Averaged over attacks and benchmark shares, {best} heals the most poison "
        f"({pct(means.at[best, 'poison_healed'])} at {means.at[best, 'model_damage']:+.1f} "
        f"points of clean accuracy); {gentlest} damages the model least "
        f"({means.at[gentlest, 'model_damage']:+.1f} points, "
        f"{pct(means.at[gentlest, 'poison_healed'])} healed). Marker shape is the attack."
    )
    figure.add_vline(x=0, line_dash="dot")
    figure.update_layout(
        xaxis_title="model damage (clean accuracy change, points)",
        yaxis_title="poison healed",
        yaxis_tickformat=".0%",
        height=450,
    )
    return with_reading(figure, title, reading_text)


def ptn_tradeoff(results: pd.DataFrame, traces: dict[str, pd.DataFrame]) -> go.Figure:
    """Accuracy on S_f and clean accuracy along each PTN search that was scored on the test
    sets (``potion.tradeoff_shares``), the chosen alpha marked."""
    title = "PTN trade-off: accuracy on the discovered set and clean accuracy against alpha"
    scored = {
        attack: trace[trace.clean_accuracy.notna()]
        for attack, trace in traces.items()
        if "clean_accuracy" in trace and trace.clean_accuracy.notna().any()
    }
    if not scored:
        return nothing_to_show(
            title, "No PTN search was scored on the test sets (potion.tradeoff_shares)."
        )
    attacks = sorted(scored)
    methods = method_order(pd.concat(scored.values()).method)
    colour = colours(methods)
    figure = make_subplots(rows=1, cols=len(attacks), subplot_titles=attacks, shared_yaxes=True)
    sentences = []
    for col, attack in enumerate(attacks, start=1):
        trace = scored[attack]
        for (method, share), steps in trace.groupby(["method", "share"], sort=False):
            steps = steps.sort_values("step")
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
                    showlegend=col == 1,
                    line={"color": colour[method], "dash": dash},
                    marker={"size": 5},
                    row=1,
                    col=col,
                )
            chosen = chosen_step(results, attack, method, share, steps)
            if chosen is None:
                sentences.append(
                    f"{method} on {attack} ({share}) did not meet PTN's condition in "
                    f"{len(steps)} steps; the model was left unchanged."
                )
                continue
            figure.add_scatter(
                x=[chosen.alpha, chosen.alpha],
                y=[chosen.forget_accuracy, chosen.clean_accuracy],
                mode="markers",
                marker={"symbol": "star", "size": 16, "color": colour[method]},
                name=f"{method} chosen",
                legendgroup=method,
                showlegend=False,
                hovertemplate="chosen alpha %{x:.3g}<br>%{y:.1%}",
                row=1,
                col=col,
            )
            first = steps.iloc[0]
            sentences.append(
                f"{method} on {attack} ({share}): {len(steps)} steps took alpha from "
                f"{first.alpha:.3g} to {chosen.alpha:.3g}; accuracy on S_f fell from "
                f"{pct(first.forget_accuracy)} to {pct(chosen.forget_accuracy)} while clean "
                f"accuracy went from {pct(first.clean_accuracy)} to {pct(chosen.clean_accuracy)}."
            )
    figure.update_xaxes(title="alpha (selection threshold)", type="log", autorange="reversed")
    figure.update_yaxes(range=[0, 1], tickformat=".0%")
    figure.update_layout(height=450)
    return with_reading(figure, title, " ".join(sentences))


def chosen_step(results, attack, method, share, steps) -> pd.Series | None:
    """The trace step PTN returned: its last step if the search converged."""
    mask = (
        (results.attack == attack)
        & (results.method == method)
        & (results.discovery_share == share)
        & (results.metric == "ptn_converged")
    )
    converged = results[mask].value
    if converged.empty or converged.iloc[-1] < 1:
        return None
    return steps.iloc[-1]


def timing(results: pd.DataFrame) -> go.Figure:
    title = "Wall time per attack and method"
    rows = results[results.metric.isin(["seconds", "seconds_per_epoch"])]
    if rows.empty:
        return nothing_to_show(title, "No timings in this run.")
    table = (
        rows.pivot_table(
            index=["attack", "method"], columns="metric", values="value", aggfunc="median"
        )
        .reindex(columns=["seconds", "seconds_per_epoch"])
        .reset_index()
    )
    order = {m: i for i, m in enumerate(method_order(table.method))}
    table = table.sort_values(
        ["attack", "method"], key=lambda c: c.map(order) if c.name == "method" else c
    )
    figure = go.Figure(
        go.Table(
            header={
                "values": ["attack", "method", "seconds (median over shares)", "seconds per epoch"]
            },
            cells={
                "values": [
                    table.attack,
                    table.method,
                    table.seconds.map(lambda v: f"{v:.1f}"),
                    table.seconds_per_epoch.map(lambda v: "" if math.isnan(v) else f"{v:.2f}"),
                ]
            },
        )
    )
    sentences = []
    per = table.set_index(["attack", "method"])
    for attack in table.attack.unique():
        cell = {
            m: per.loc[(attack, m)]
            for m in ("ieu", "none", "xlf_ptn", "eu")
            if (attack, m) in per.index
        }
        if {"ieu", "none"} <= set(cell):
            ratio = cell["ieu"].seconds_per_epoch / cell["none"].seconds_per_epoch
            sentences.append(f"On {attack} an IEU epoch takes {ratio:.2f}x an undefended one.")
        if {"xlf_ptn", "eu"} <= set(cell):
            xlf, eu = cell["xlf_ptn"].seconds, cell["eu"].seconds
            sentences.append(
                f"On {attack} XLF+PTN takes {xlf:.1f} s, {xlf / eu:.3f}x the {eu:.1f} s of EU "
                "retraining."
            )
    if not sentences:
        slowest = table.sort_values("seconds").iloc[-1]
        sentences.append(
            f"The slowest step is {slowest.method} on {slowest.attack} ({slowest.seconds:.1f} s)."
        )
    figure.update_layout(height=max(250, 40 + 28 * len(table)))
    return with_reading(figure, title, " ".join(sentences))
