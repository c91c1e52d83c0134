import math
import re

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs_version

from ieu_potion.reporting import figures
from ieu_potion.reporting.report import Section, render
from ieu_potion.reporting.tables import current_rows, main_table, markdown_table
from tests.reporting.samples import (
    FINGERPRINT,
    sample_confidences,
    sample_gate_history,
    sample_results,
    sample_trace,
)


@pytest.fixture
def results():
    return current_rows([sample_results()], [FINGERPRINT])


def test_current_rows_keep_each_key_once(results):
    doubled = current_rows([sample_results(), sample_results()], [FINGERPRINT, FINGERPRINT])
    assert len(doubled) == len(results)
    assert set(results.namespace) == {"badnets_white", "blended"}


def test_markdown_table_rounds_and_leaves_nan_blank():
    table = pd.DataFrame({"a": ["x|y", "z"], "b": [0.12345, math.nan]})
    table["n"] = pd.array([3, None], dtype="Int64")
    assert markdown_table(table, digits=2) == (
        "| a | b | n |\n|---|---|---|\n| x\\|y | 0.12 | 3 |\n| z |  |  |\n"
    )


def test_main_table_keeps_a_method_that_does_not_apply_with_a_note():
    from ieu_potion.results import RunKey

    key = RunKey("digits", "badnets_white", "badnets_white", 0, "f")
    rows = pd.concat(
        [
            key.rows("none", {"clean_accuracy": 0.9, "attack_success_rate": 0.8}),
            key.rows("ibau", {"clean_accuracy": 0.85, "attack_success_rate": 0.1}),
            key.rows("attnblock", {"not_applicable": 1.0, "seconds": 0.1}),
        ]
    )
    table = main_table(rows).set_index("method")
    assert list(table.index) == ["none", "attnblock", "ibau"]
    assert table.note["attnblock"] == "not applicable to this robust module"
    assert math.isnan(table.CA["attnblock"]) and table.note["ibau"] == ""
    assert table.CA["ibau"] == pytest.approx(85.0)


def test_ca_asr_reading_states_means_intervals_and_n(results):
    figure = figures.ca_asr(results)
    text = figures.reading(figure)
    assert (
        "On badnets_white (N = 3 seeds): none CA 84.0 ± 2.5% / ASR 93.0 ± 2.5%, "
        "ieu CA 87.0 ± 2.5% / ASR 2.0 ± 2.5%" in text
    )
    assert "IEU lowers the mean ASR by 91.0 points" in text and "(CA intervals overlap)" in text
    assert "On blended (N = 1 seed): none CA 86.0% / ASR 97.0%" in text
    assert len(figure.data) == 4  # two methods x (CA, ASR)
    none_ca = figure.data[0]
    assert list(none_ca.x) == ["badnets_white", "blended"]
    assert none_ca.error_y.array[0] == pytest.approx(0.02484, abs=1e-5)


def test_confidence_cdf_pools_seeds_and_gives_per_seed_intervals():
    other = sample_confidences()
    other["confidence"] = other["confidence"].copy()
    other["confidence"][1:3] = 0.9  # two poisoned samples below tau in this seed
    other["tau"] = np.array(0.85)  # and a lower threshold: 0.9 is above it again
    other["confidence"][3] = 0.8
    figure = figures.confidence_cdf(
        {"badnets_white.seed_0": sample_confidences(), "badnets_white.seed_1": other}
    )
    text = figures.reading(figure)
    assert "On badnets_white (N = 2 seeds, curves pooled)" in text
    # tau 0.95 and 0.85: mean 0.9, t(0.975, 1) * 0.0707 / 1.41 = 0.635
    assert "threshold is tau = 0.900 ± 0.635" in text
    # 95% and 90% of the poisoned above each run's tau: mean 92.5, 12.706 * 3.54 / 1.41 = 31.8
    assert "above which lie 92.5 ± 31.8% of the poisoned and 0.0 ± 0.0% of the clean" in text
    assert [shape.x0 for shape in figure.layout.shapes] == [pytest.approx(0.9)]
    clean, poisoned = figure.data
    assert clean.name == "badnets_white: clean (360)" and poisoned.y[-1] == pytest.approx(1.0)


def test_gate_history_averages_seeds_per_epoch():
    later = sample_gate_history().assign(gate_recall=[0.4, 0.9, 0.85], gate_flagged=[9, 19, 22])
    figure = figures.gate_history(
        {"blended.seed_0": sample_gate_history(), "blended.seed_1": later}
    )
    text = figures.reading(figure)
    assert "On blended (N = 2 seeds) the gate ends epoch 3 at precision 95.0 ± 0.0%" in text
    assert "recall 90.0 ± 63.5% (21 ± 13 samples flagged)" in text
    recall = figure.data[1]
    assert list(recall.y) == pytest.approx([0.3, 0.85, 0.9])
    # 0.9 +- 0.635 is drawn from 0.265 up to 1: a share cannot exceed 1
    assert recall.error_y.array[-1] == pytest.approx(0.1)
    assert recall.error_y.arrayminus[-1] == pytest.approx(0.6353, abs=1e-4)


def test_gate_history_names_the_epoch_stage_two_kept():
    first = sample_gate_history().assign(kept=[False, True, False])
    second = sample_gate_history().assign(kept=[False, False, True])
    text = figures.reading(figures.gate_history({"b.seed_0": first, "b.seed_1": second}))
    assert "Stage 2 used the gate of epoch 2, 3 (per seed)" in text
    assert "at precision 90.0%, 95.0% and recall 80.0%, 95.0%" in text


def test_healed_vs_share_and_damage_use_benchmark_shares_with_intervals(results):
    by_share = figures.healed_vs_share(results)
    assert (
        "with a share of 0.1 of the poison discovered, xlf_ptn heals the most "
        "(71.0 ± 12.7%);" in figures.reading(by_share)
    )
    scatter = figures.healed_vs_damage(results)
    xs = sorted(x for trace in scatter.data for x in trace.x)
    assert xs == [-6.5, -5.5, 1.2]  # means over seeds; one-shot and 'none' left out
    # shares averaged per seed (0.73 at both seeds), the interval over the two seeds: never
    # over seeds x shares
    assert (
        "On badnets_white, shares averaged per seed (N = 2 seeds), xlf_ptn heals the most "
        "(73.0 ± 0.0% at -6.0 ± 6.4 points); eu damages the model least (1.2 ± 6.4 points"
    ) in figures.reading(scatter)


def test_a_reading_says_when_the_most_healed_equals_doing_nothing():
    """Every XLF+PTN search gave up: the model is the undefended one, and the reading must
    not present its figure as repair."""
    from ieu_potion.results import RunKey

    rows = []
    for seed in range(3):
        key = RunKey("d", "badnets_white", "badnets_white", seed, "f")
        for method in ("none", "xlf_ptn"):
            metrics = {"poison_healed": 0.133 + seed / 100, "model_damage": 0.0}
            if method == "xlf_ptn":
                metrics["ptn_converged"] = 0.0
            rows.append(key.rows(method, metrics, "share_0.1"))
    for figure in (figures.healed_vs_share, figures.healed_vs_damage):
        text = figures.reading(figure(pd.concat(rows)))
        assert "not resolved above doing nothing (none: 14.3 ± 2.5%" in text
        assert "PTN gave up (model unchanged) in 3 of 3 xlf_ptn searches" in text


def test_ptn_tradeoff_marks_the_chosen_step_of_every_seed(results):
    later = sample_trace().assign(forget_accuracy=[0.9, 0.5, 0.10, 0.9, 0.7])
    later.loc[2, "clean_accuracy"] = 0.77
    figure = figures.ptn_tradeoff(
        results, {"badnets_white.seed_0": sample_trace(), "badnets_white.seed_1": later}
    )
    stars = [t for t in figure.data if t.marker.symbol == "star"]
    assert [list(s.y) for s in stars] == [[0.08, 0.79], [0.10, 0.77]]
    assert (
        "xlf_ptn on badnets_white (share_0.5, N = 2 seeds): 3 ± 0 steps; at the chosen alpha "
        "accuracy on S_f is 9.0 ± 12.7% and clean accuracy 78.0 ± 12.7%" in figures.reading(figure)
    )


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
        lambda r: figures.confidence_cdf({}),
        lambda r: figures.gate_history({}),
    ],
)
def test_every_figure_says_when_the_run_has_nothing_for_it(build):
    empty = current_rows([], [])
    text = figures.reading(build(empty))
    assert text.startswith("No ")


def test_report_is_self_contained_and_carries_readings_and_seeds(results):
    figure = figures.ca_asr(results)
    page = render(
        "digits",
        {"dataset_name": "digits", "ieu": {"gate_training": {"seed": 7}}},
        {"Main table": main_table(results)},
        [Section("Figures", [figure])],
    )
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=\"?https?:", page)
    assert "Plotly.newPlot" in page
    assert f"plotly.js v{get_plotlyjs_version()}" in page  # the library itself is embedded
    assert figures.reading(figure) in page.replace("&#x27;", "'")
    assert "ieu.gate_training.seed: 7" in page


def test_ptn_tradeoff_counts_every_step_when_only_some_were_scored(results):
    """With potion.tradeoff_points the middle steps carry no test-set scores; the reading
    still gives the search's length."""
    sparse = sample_trace()
    sparse.loc[1, ["clean_accuracy", "attack_success_rate"]] = np.nan
    figure = figures.ptn_tradeoff(results, {"badnets_white.seed_0": sparse})
    assert "xlf_ptn on badnets_white (share_0.5, N = 1 seed): 3 steps" in figures.reading(figure)
