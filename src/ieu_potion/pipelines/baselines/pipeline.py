"""baselines: per attack namespace, the undefended finetune ("none")."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.baselines import nodes
from ieu_potion.pipelines.templating import (
    Replicate,
    bound,
    namespaces,
    per_namespace,
    shared_parameters,
)


def baselines_template(replicate: Replicate) -> Pipeline:
    return pipeline(
        [
            node(
                bound(nodes.finetune_undefended, key=replicate.key("none")),
                [
                    "backbone",
                    "poisoned_train",
                    "clean_test",
                    "triggered_test",
                    "params:finetune",
                    "params:namespace.attack",
                ],
                ["none_model", "none_history", "results_none"],
                name="finetune_undefended",
            ),
        ]
    )


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    """The undefended finetune for ``baselines.attacks`` and for every namespace Potion
    repairs (it needs that model)."""
    return per_namespace(
        baselines_template,
        params,
        "baselines",
        {"backbone", "clean_test"},
        shared_parameters("finetune"),
        extra=tuple(namespaces(params, "potion_unlearning")),
    )
