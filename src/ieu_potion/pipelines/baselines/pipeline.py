"""baselines: per attack namespace, the undefended finetune ("none")."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.baselines import nodes
from ieu_potion.pipelines.templating import namespaces, shared_parameters


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
    template = baselines_template()
    return sum(
        (
            pipeline(
                template,
                namespace=ns,
                inputs={"backbone", "clean_test"},
                parameters=shared_parameters("finetune", "dataset_name"),
                tags=["baselines", ns],
            )
            for ns in namespaces(params, "baselines")
        ),
        Pipeline([]),
    )
