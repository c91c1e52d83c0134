"""reporting: built from the outputs of the other pipelines of the same run.

The inputs are found by name among ``upstream``'s outputs, so the report covers exactly
the attacks, seeds and methods the run produces: every ``<ns>.seed_<s>.results_*`` table
(joined by one node, which keeps only rows of the current configuration), the gate
confidences and stage-1 histories of IEU namespaces, the PTN traces of Potion namespaces
and the galleries of data_poisoning.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node

from ieu_potion.pipelines.reporting import nodes
from ieu_potion.pipelines.templating import Replicate, bound, configuration
from ieu_potion.reporting import figures
from ieu_potion.results import split_replicate

# The summary tables, in the order nodes.summary_tables returns them and nodes.report
# takes them.
TABLES = (
    "main_table",
    "potion_table",
    "potion_by_share",
    "potion_reproduction",
    "potion_orderings",
    "ieu_reproduction",
    "ieu_orderings",
)


def _outputs(upstream: Pipeline, suffix: str) -> dict[str, str]:
    """replicate (``<ns>.seed_<s>``) -> dataset for every output named ``<...>.<suffix>``."""
    found = {}
    for name in sorted(upstream.all_outputs()):
        replicate, _, local = name.rpartition(".")
        if replicate and local == suffix:
            found[replicate] = name
    return found


def first_seed(per_replicate: dict[str, str]) -> dict[str, str]:
    """One entry per attack namespace: its lowest seed's (galleries look alike)."""
    chosen: dict[str, tuple[int, str]] = {}
    for replicate, dataset in per_replicate.items():
        namespace, seed = split_replicate(replicate)
        if namespace not in chosen or seed < chosen[namespace][0]:
            chosen[namespace] = (seed, dataset)
    return {ns: dataset for ns, (_, dataset) in sorted(chosen.items())}


def expected_rows(params: dict[str, Any], upstream: Pipeline):
    """(results datasets, the fingerprint each must carry, the configuration per
    fingerprint) for the run's current parameters."""
    results, fingerprints, configurations = [], [], {}
    for name in sorted(upstream.all_outputs()):
        replicate, _, local = name.rpartition(".")
        if not local.startswith("results_"):
            continue
        namespace, seed = split_replicate(replicate)
        family = local.removeprefix("results_")
        key = Replicate(namespace, seed, params).key(family)
        results.append(name)
        fingerprints.append(key.fingerprint)
        configurations[key.fingerprint] = {
            "family": family,
            "namespace": namespace,
            "parameters": configuration(params, namespace, family),
        }
    return results, fingerprints, dict(sorted(configurations.items()))


def create_pipeline(params: dict[str, Any], upstream: Pipeline) -> Pipeline:
    results, fingerprints, configurations = expected_rows(params, upstream)
    confidences = _outputs(upstream, "gate_confidence")
    histories = _outputs(upstream, "gate_history")
    traces = _outputs(upstream, "potion_trace")
    galleries = first_seed(_outputs(upstream, "attack_gallery"))
    return Pipeline(
        [
            node(
                bound(
                    nodes.collect_results,
                    fingerprints=fingerprints,
                    configurations=configurations,
                ),
                results,
                ["results_long", "results_archive", "configurations"],
                name="collect_results",
            ),
            node(
                nodes.summary_tables,
                "results_long",
                list(TABLES),
                name="summary_tables",
            ),
            node(figures.ca_asr, "results_long", "ca_asr_figure", name="ca_asr_figure"),
            node(
                bound(nodes.confidence_figure, replicates=list(confidences)),
                list(confidences.values()) or None,
                "gate_confidence_cdf_figure",
                name="gate_confidence_cdf_figure",
            ),
            node(
                bound(nodes.gate_history_figure, replicates=list(histories)),
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
                bound(nodes.tradeoff_figure, replicates=list(traces)),
                ["results_long", *traces.values()],
                "ptn_tradeoff_figure",
                name="ptn_tradeoff_figure",
            ),
            node(figures.timing, "results_long", "timing_figure", name="timing_figure"),
            *(
                node(builder, "results_long", f"{name}_figure", name=f"{name}_figure")
                for name, builder in figures.ADDED.items()
            ),
            node(
                bound(nodes.report, galleries=len(galleries)),
                [
                    "parameters",
                    "results_long",
                    *TABLES,
                    *(f"{name}_figure" for name in (*figures.BUILT_IN, *figures.ADDED)),
                    *galleries.values(),
                ],
                "report_html",
                name="report",
            ),
        ],
        tags=["reporting"],
    )
