"""reporting nodes: thin wrappers around ``ieu_potion.reporting``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ieu_potion.reporting import figures
from ieu_potion.reporting.report import Section, render
from ieu_potion.reporting.tables import (
    current_rows,
    ieu_orderings,
    ieu_reproduction,
    main_table,
    orderings,
    potion_table,
    published_ieu,
    published_potion,
    reproduction_table,
    share_table,
)


def collect_results(*tables: pd.DataFrame, fingerprints: list[str], configurations: dict[str, Any]):
    """(the current configuration's rows, the same rows for the archive of every run in
    this data folder, the parameters behind each fingerprint)."""
    rows = current_rows(list(tables), fingerprints)
    return rows, rows, configurations


def summary_tables(results: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    """The main CA/ASR table, the Potion Table 1 analogue, the same beside the paper's
    published values, and which of the paper's orderings hold; then IEU's comparison
    over the learnt attacks beside its paper's averages, and which of its claims hold."""
    return (
        main_table(results),
        potion_table(results),
        share_table(results),
        reproduction_table(results, published_potion()),
        orderings(results),
        ieu_reproduction(results, published_ieu()),
        ieu_orderings(results),
    )


def confidence_figure(*arrays: dict[str, np.ndarray], replicates: list[str]) -> go.Figure:
    return figures.confidence_cdf(dict(zip(replicates, arrays, strict=True)))


def gate_history_figure(*histories: pd.DataFrame, replicates: list[str]) -> go.Figure:
    return figures.gate_history(dict(zip(replicates, histories, strict=True)))


def tradeoff_figure(
    results: pd.DataFrame, *traces: pd.DataFrame, replicates: list[str]
) -> go.Figure:
    return figures.ptn_tradeoff(results, dict(zip(replicates, traces, strict=True)))


def report(
    parameters: dict[str, Any],
    results: pd.DataFrame,
    main: pd.DataFrame,
    potion: pd.DataFrame,
    by_share: pd.DataFrame,
    reproduction: pd.DataFrame,
    potion_orderings: pd.DataFrame,
    ieu_reproduction: pd.DataFrame,
    ieu_orderings_table: pd.DataFrame,
    *figs: go.Figure,
    galleries: int,
) -> str:
    """The HTML page; ``figs`` are the report figures followed by ``galleries`` attack
    galleries."""
    plots, gallery = list(figs[: len(figs) - galleries]), list(figs[len(figs) - galleries :])
    sections = [Section("Figures", plots)]
    if gallery:
        sections.append(Section("Attack gallery", gallery))
    tables = {
        "Main table: clean accuracy and ASR (percent), mean ± 95% interval over seeds "
        "(Student t), N seeds; 'vs none' says whether the interval overlaps the undefended "
        "model's": main,
        "Potion: poison healed and model damage averaged over the benchmark shares, mean ± "
        "95% interval over seeds (Student t), N seeds; one-shot and realistic over seeds; a "
        "PTN search that gave up counts as the unchanged model it returns; 'healed vs none' "
        "says whether the interval overlaps doing nothing's, and the none row gives the "
        "undefended model's ASR per seed (a seed that never learnt the trigger has nothing "
        "to heal)": potion,
        "Potion per discovered share: healed (percent) and damage (points), mean ± 95% "
        "interval over seeds at each share (shares are nested subsets of one model's poison, "
        "so they are columns, not repetitions); '[k gave up]': k PTN searches stopped at a "
        "bound and left the model unchanged": by_share,
        "Potion reproduction: the table above beside the Potion paper's Table 1 (CIFAR-10, "
        "ResNet-9 from scratch, averaged over 0.2/1/2% poison and shares 10%-100%; "
        "reporting/published/README.md gives the source)": reproduction,
        "The Potion paper's orderings on this run: 'holds' where the 95% intervals over "
        "seeds are apart in the paper's direction": potion_orderings,
        "IEU reproduction: CA and ASR (percent) averaged over the attacks the undefended "
        "model learnt (ASR at least 80%), mean ± 95% interval over seeds, beside the IEU "
        "paper's averages over its 11 attacks (second-hand values: "
        "reporting/published/README.md); abl_oracle is ABL under that paper's "
        "protocol": ieu_reproduction,
        "The IEU paper's claims on this run (IEU's ASR below and CA above each other "
        "defence's): 'holds' where the 95% intervals are apart": ieu_orderings_table,
        "All results of the current configuration (long format)": results,
    }
    return render(parameters.get("dataset_name", ""), parameters, tables, sections)
