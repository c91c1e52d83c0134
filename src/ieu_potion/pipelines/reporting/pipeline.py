"""reporting: built from the outputs of the other pipelines of the same run.

The inputs are found by name among ``upstream``'s outputs, so the report covers exactly
the attacks and methods the run produces: every ``<ns>.results_*`` table, the gate
confidences and stage-1 histories of IEU namespaces, the PTN traces of Potion namespaces
and the galleries of data_poisoning.
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from ieu_potion.pipelines.reporting import nodes
from ieu_potion.reporting import figures


def _outputs(upstream: Pipeline, suffix: str) -> dict[str, str]:
    """namespace -> dataset for every output named ``<namespace>.<suffix>``."""
    found = {}
    for name in sorted(upstream.all_outputs()):
        namespace, _, local = name.rpartition(".")
        if namespace and local == suffix:
            found[namespace] = name
    return found


def _bound(function, **kwargs):
    """``function`` with keyword arguments fixed, keeping its name for Kedro."""
    return update_wrapper(partial(function, **kwargs), function)


def create_pipeline(upstream: Pipeline) -> Pipeline:
    results = sorted(
        n for n in upstream.all_outputs() if n.rpartition(".")[2].startswith("results_")
    )
    attacks = sorted({n.rpartition(".")[0] for n in results})
    confidences = _outputs(upstream, "gate_confidence")
    histories = _outputs(upstream, "gate_history")
    traces = _outputs(upstream, "potion_trace")
    galleries = _outputs(upstream, "attack_gallery")
    figure_names = [
        "ca_asr",
        "gate_confidence_cdf",
        "gate_history",
        "healed_vs_share",
        "healed_vs_damage",
        "ptn_tradeoff",
        "timing",
    ]
    return Pipeline(
        [
            node(
                _bound(nodes.collect_results, attacks=attacks),
                ["params:dataset_name", *results],
                "results_long",
                name="collect_results",
            ),
            node(
                nodes.summary_tables,
                "results_long",
                ["summary_wide", "potion_table"],
                name="summary_tables",
            ),
            node(figures.ca_asr, "results_long", "ca_asr_figure", name="ca_asr_figure"),
            node(
                _bound(nodes.confidence_figure, attacks=list(confidences)),
                ["params:ieu", *confidences.values()],
                "gate_confidence_cdf_figure",
                name="gate_confidence_cdf_figure",
            ),
            node(
                _bound(nodes.gate_history_figure, attacks=list(histories)),
                list(histories.values()) or None,
                "gate_history_figure",
                name="gate_history_figure",
            ),
            node(
                figures.healed_vs_share,
                "results_long",
                "healed_vs_share_figure",
                name="healed_vs_share_figure",
            ),
            node(
                figures.healed_vs_damage,
                "results_long",
                "healed_vs_damage_figure",
                name="healed_vs_damage_figure",
            ),
            node(
                _bound(nodes.tradeoff_figure, attacks=list(traces)),
                ["results_long", *traces.values()],
                "ptn_tradeoff_figure",
                name="ptn_tradeoff_figure",
            ),
            node(figures.timing, "results_long", "timing_figure", name="timing_figure"),
            node(
                _bound(nodes.report, galleries=len(galleries)),
                [
                    "parameters",
                    "results_long",
                    "summary_wide",
                    "potion_table",
                    *(f"{name}_figure" for name in figure_names),
                    *galleries.values(),
                ],
                "report_html",
                name="report",
            ),
        ],
        tags=["reporting"],
    )
