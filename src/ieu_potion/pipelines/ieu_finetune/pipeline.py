"""ieu_finetune: the backbone, then per attack namespace IEU's two stages."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.ieu_finetune import nodes
from ieu_potion.pipelines.templating import per_namespace, shared_parameters


def backbone_pipeline() -> Pipeline:
    """The robust module's starting weights, shared by every method and attack."""
    return pipeline(
        [
            node(
                nodes.backbone,
                ["pretrain_images", "clean_test", "params:model"],
                ["backbone", "backbone_history"],
                name="backbone",
                tags=["models"],
            ),
        ]
    )


def ieu_template() -> Pipeline:
    return pipeline(
        [
            node(
                nodes.train_gate,
                ["backbone", "poisoned_train", "params:model", "params:ieu"],
                ["ieu_gate", "gate_history"],
                name="train_gate",
            ),
            node(
                nodes.gate_confidences,
                ["ieu_gate", "poisoned_train"],
                "gate_confidence",
                name="gate_confidences",
            ),
            node(
                nodes.finetune_ieu,
                [
                    "backbone",
                    "ieu_gate",
                    "poisoned_train",
                    "clean_test",
                    "triggered_test",
                    "params:finetune",
                    "params:ieu",
                    "params:attack",
                    "params:dataset_name",
                ],
                ["ieu_model", "ieu_history", "results_ieu"],
                name="finetune_ieu",
            ),
        ]
    )


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    return per_namespace(
        ieu_template(),
        params,
        "ieu_finetune",
        {"backbone", "clean_test"},
        shared_parameters("model", "ieu", "finetune", "dataset_name"),
    )
