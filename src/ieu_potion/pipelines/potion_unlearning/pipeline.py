"""potion_unlearning: per attack namespace, unlearn the poison from the undefended model.

``potion.discovery`` picks where the discovered subsets come from: ``benchmark`` (the
nested ground-truth shares of data_poisoning) or ``realistic`` (the samples IEU's gate
flags, which pulls the gate's training into the run).  A namespace may carry its own
``<namespace>.potion`` entries over the shared block (node ``potion_settings``).
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.potion_unlearning import nodes
from ieu_potion.pipelines.templating import (
    Replicate,
    bound,
    per_namespace,
    potion_settings,
    shared_parameters,
)


def potion_template(replicate: Replicate) -> Pipeline:
    own = ["params:namespace.potion"] if "potion" in replicate.params[replicate.namespace] else []
    settings = node(
        bound(nodes.namespace_settings, namespace=replicate.namespace),
        ["params:potion", *own],
        "potion_settings",
        name="potion_settings",
    )
    if potion_settings(replicate.params, replicate.namespace).discovery == "realistic":
        select = node(
            nodes.realistic_subsets,
            "gate_confidence",
            "potion_subsets",
            name="realistic_subsets",
        )
    else:
        select = node(
            nodes.benchmark_subsets,
            ["discovery_subsets", "potion_settings"],
            "potion_subsets",
            name="benchmark_subsets",
        )
    return pipeline(
        [
            settings,
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
                    "potion_settings",
                    "params:finetune",
                    "params:namespace.attack",
                    *(["params:namespace.finetune"] if replicate.own_recipe else []),
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
    return per_namespace(
        potion_template,
        params,
        "potion_unlearning",
        {"backbone", "clean_test"},
        shared_parameters("potion", "finetune"),
    )
