"""potion_unlearning: per attack namespace, unlearn the poison from the undefended model.

``potion.discovery`` picks where the discovered subsets come from: ``benchmark`` (the
nested ground-truth shares of data_poisoning) or ``realistic`` (the samples IEU's gate
flags, which pulls the gate's training into the run).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.potion_unlearning import nodes
from ieu_potion.pipelines.templating import Replicate, bound, per_namespace, shared_parameters


def potion_template(discovery: str, replicate: Replicate) -> Pipeline:
    if discovery == "realistic":
        select = node(
            nodes.realistic_subsets,
            ["gate_confidence", "params:potion"],
            "potion_subsets",
            name="realistic_subsets",
        )
    else:
        select = node(
            nodes.benchmark_subsets,
            ["discovery_subsets", "params:potion"],
            "potion_subsets",
            name="benchmark_subsets",
        )
    return pipeline(
        [
            select,
            node(
                bound(nodes.unlearn_poison, key=replicate.key("potion")),
                [
                    "none_model",
                    "backbone",
                    "poisoned_train",
                    "potion_subsets",
                    "clean_test",
                    "triggered_test",
                    "params:potion",
                    "params:finetune",
                    "params:attack",
                ],
                ["results_potion", "potion_trace"],
                name="unlearn_poison",
            ),
            node(
                nodes.summarise,
                "results_potion",
                "potion_summary",
                name="potion_summary",
            ),
        ]
    )


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    discovery = (params.get("potion") or {}).get("discovery", "benchmark")
    return per_namespace(
        partial(potion_template, discovery),
        params,
        "potion_unlearning",
        {"backbone", "clean_test"},
        shared_parameters("potion", "finetune"),
    )
