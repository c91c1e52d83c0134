import math
import re

import pandas as pd
import pytest

from ieu_potion.reporting import figures
from ieu_potion.reporting.report import Section, render
from ieu_potion.reporting.tables import markdown_table, run_results, summary_wide
from tests.reporting.samples import (
    sample_confidences,
    sample_gate_history,
    sample_results,
    sample_trace,
)


@pytest.fixture
def results():
    return run_results([sample_results()], "digits", ["badnets_white", "blended"])


def test_run_results_keeps_this_runs_data_set_and_attacks_once(results):
    assert set(results.dataset) == {"digits"}
    assert set(results.attack) == {"badnets_white", "blended"}
    doubled = run_results([sample_results(), sample_results()], "digits", ["blended"])
    assert len(doubled) == 4


def test_summary_wide_has_ca_and_asr_per_method_in_percent(results):
    table = summary_wide(results).set_index("attack")
    assert list(table.columns) == ["none CA", "none ASR", "ieu CA", "ieu ASR", "seeds"]
    assert table.at["badnets_white", "ieu ASR"] == pytest.approx(2.0)
    assert table.at["blended", "none CA"] == pytest.approx(86.0)


def test_markdown_table_rounds_and_leaves_nan_blank():
    table = pd.DataFrame({"a": ["x|y", "z"], "b": [0.12345, math.nan]})
    assert markdown_table(table, digits=2) == "| a | b |\n|---|---|\n| x\\|y | 0.12 |\n| z |  |\n"


def test_ca_asr_reading_states_the_numbers(results):
    figure = figures.ca_asr(results)
    text = figures.reading(figure)
    assert "On badnets_white: none CA 84.0% / ASR 93.0%, ieu CA 87.0% / ASR 2.0%" in text
    assert "IEU lowers the ASR by 91.0 points" in text and "by +3.0 points" in text
    assert len(figure.data) == 4  # two methods x (CA, ASR)


def test_confidence_cdf_reading_counts_samples_above_tau():
    figure = figures.confidence_cdf({"badnets_white": sample_confidences()}, tau=0.95)
    text = figures.reading(figure)
    assert "0.99 on 20 poisoned ones" in text and "180 clean samples" in text
    assert "above tau = 0.95 lie 95.0% of the poisoned and 0.0% of the clean" in text
    clean, poisoned = figure.data
    assert clean.y[-1] == pytest.approx(1.0) and poisoned.y[-1] == pytest.approx(1.0)


def test_gate_history_reading_gives_final_scores_and_when_recall_arrives():
    figure = figures.gate_history({"blended": sample_gate_history()})
    text = figures.reading(figure)
    assert "ends epoch 3 at precision 95.0% and recall 95.0% (20 samples flagged)" in text
    assert "at epoch 3" in text


def test_healed_vs_share_and_damage_use_benchmark_shares(results):
    by_share = figures.healed_vs_share(results)
    assert "share of 0.1 of the poison discovered the most healed is xlf_ptn (70.0%)" in (
        figures.reading(by_share)
    )
    scatter = figures.healed_vs_damage(results)
    xs = sorted(x for trace in scatter.data for x in trace.x)
    assert xs == [-6.0, -5.0, 1.7]  # one-shot and 'none' left out
    assert "xlf_ptn heals the most poison (73.0% at -5.5 points" in figures.reading(scatter)


def test_ptn_tradeoff_marks_the_chosen_step(results):
    figure = figures.ptn_tradeoff(results, {"badnets_white": sample_trace()})
    stars = [t for t in figure.data if t.marker.symbol == "star"]
    assert len(stars) == 1 and list(stars[0].x) == [6.0, 6.0]
    assert list(stars[0].y) == [0.08, 0.79]
    assert "3 steps took alpha from 50 to 6" in figures.reading(figure)


def test_timing_reading_compares_ieu_with_none_and_xlf_with_eu(results):
    text = figures.reading(figures.timing(results))
    assert "an IEU epoch takes 1.24x an undefended one" in text
    assert "XLF+PTN takes 3.0 s, 0.030x the 100.0 s of EU" in text


@pytest.mark.parametrize(
    "build",
    [
        figures.ca_asr,
        figures.healed_vs_share,
        figures.healed_vs_damage,
        figures.timing,
        lambda r: figures.ptn_tradeoff(r, {}),
        lambda r: figures.confidence_cdf({}, 0.9),
        lambda r: figures.gate_history({}),
    ],
)
def test_every_figure_says_when_the_run_has_nothing_for_it(build):
    empty = run_results([], "digits", [])
    text = figures.reading(build(empty))
    assert text.startswith("No ")


def test_report_is_self_contained_and_carries_readings_and_seeds(results):
    figure = figures.ca_asr(results)
    page = render(
        "digits",
        {"dataset_name": "digits", "ieu": {"gate_training": {"seed": 7}}},
        {"Main table": summary_wide(results)},
        [Section("Figures", [figure])],
    )
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=\"?https?:", page)
    assert "Plotly.newPlot" in page and "plotly.js v" in page.lower() or "plotly" in page
    assert figures.reading(figure) in page.replace("&#x27;", "'")
    assert "ieu.gate_training.seed: 7" in page
