"""baselines: per attack namespace, the undefended finetune ("none")."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.baselines import nodes
from ieu_potion.pipelines.templating import namespaces, per_namespace, shared_parameters


def baselines_template() -> Pipeline:
    return pipeline(
        [
            node(
                nodes.finetune_undefended,
                [
                    "backbone",
                    "poisoned_train",
                    "clean_test",
                    "triggered_test",
                    "params:finetune",
                    "params:attack",
                    "params:dataset_name",
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
        baselines_template(),
        params,
        "baselines",
        {"backbone", "clean_test"},
        shared_parameters("finetune", "dataset_name"),
        extra=tuple(namespaces(params, "potion_unlearning")),
    )
