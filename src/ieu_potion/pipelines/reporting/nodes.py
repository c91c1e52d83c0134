"""reporting nodes: thin wrappers around ``ieu_potion.reporting``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ieu_potion.reporting import figures
from ieu_potion.reporting.report import Section, render
from ieu_potion.reporting.results import potion_table
from ieu_potion.reporting.tables import run_results, summary_wide


def collect_results(dataset_name: str, *tables: pd.DataFrame, attacks: list[str]) -> pd.DataFrame:
    return run_results(list(tables), dataset_name, attacks)


def summary_tables(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The wide CA/ASR table and the Potion Table 1 analogue."""
    has_potion = (results.discovery_share != "none").any() and "poison_healed" in set(
        results.metric
    )
    return summary_wide(results), potion_table(results) if has_potion else pd.DataFrame(
        {"attack": []}
    )


def confidence_figure(
    ieu: dict[str, Any], *arrays: dict[str, np.ndarray], attacks: list[str]
) -> go.Figure:
    tau = float(ieu["defence"]["tau"])
    return figures.confidence_cdf(dict(zip(attacks, arrays, strict=True)), tau)


def gate_history_figure(*histories: pd.DataFrame, attacks: list[str]) -> go.Figure:
    return figures.gate_history(dict(zip(attacks, histories, strict=True)))


def tradeoff_figure(results: pd.DataFrame, *traces: pd.DataFrame, attacks: list[str]) -> go.Figure:
    return figures.ptn_tradeoff(results, dict(zip(attacks, traces, strict=True)))


def report(
    parameters: dict[str, Any],
    results: pd.DataFrame,
    summary: pd.DataFrame,
    potion: pd.DataFrame,
    *figs: go.Figure,
    galleries: int,
) -> str:
    """The HTML page; ``figs`` are the report figures followed by ``galleries`` attack
    galleries."""
    main, gallery = list(figs[: len(figs) - galleries]), list(figs[len(figs) - galleries :])
    sections = [Section("Figures", main)]
    if gallery:
        sections.append(Section("Attack gallery", gallery))
    tables = {
        "Main table: clean accuracy and ASR (percent)": summary,
        "Potion: poison healed and model damage over discovery shares": potion,
        "All results (long format)": results,
    }
    return render(parameters.get("dataset_name", ""), parameters, tables, sections)
