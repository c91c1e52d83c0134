"""ieu_finetune: the backbone, then per attack namespace IEU's two stages."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.ieu_finetune import nodes
from ieu_potion.pipelines.templating import (
    Replicate,
    backbone_namespace,
    bound,
    per_namespace,
    seeds,
    shared_parameters,
)


def backbone_pipeline(params: dict[str, Any]) -> Pipeline:
    """The robust module's starting weights: one shared by every attack and seed (the
    default), or one per seed (``backbone_per_seed``, namespace ``seed_<s>``)."""
    copies = []
    for seed in seeds(params) if backbone_namespace(params, 0) else [0]:
        template = pipeline(
            [
                node(
                    bound(nodes.backbone, seed=seed),
                    ["pretrain_images", "clean_test", "params:model"],
                    ["backbone", "backbone_history"],
                    name="backbone",
                    tags=["models"],
                ),
            ]
        )
        copies.append(
            pipeline(
                template,
                namespace=backbone_namespace(params, seed),
                inputs={"pretrain_images", "clean_test"},
                parameters={"params:model"},
            )
        )
    return sum(copies, Pipeline([]))


def ieu_template(replicate: Replicate) -> Pipeline:
    key = replicate.key("ieu")
    return pipeline(
        [
            node(
                bound(nodes.train_gate, key=key),
                ["backbone", "poisoned_train", "params:model", "params:ieu", "params:finetune"],
                ["ieu_gate", "gate_history"],
                name="train_gate",
            ),
            node(
                nodes.gate_threshold,
                ["ieu_gate", "poisoned_train", "params:ieu", "params:finetune"],
                "gate_confidence",
                name="gate_threshold",
            ),
            node(
                bound(nodes.finetune_ieu, key=key),
                [
                    "backbone",
                    "ieu_gate",
                    "gate_confidence",
                    "poisoned_train",
                    "clean_test",
                    "triggered_test",
                    "params:finetune",
                    "params:ieu",
                    "params:attack",
                ],
                ["ieu_model", "ieu_history", "results_ieu"],
                name="finetune_ieu",
            ),
        ]
    )


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    return per_namespace(
        ieu_template,
        params,
        "ieu_finetune",
        {"backbone", "clean_test"},
        shared_parameters("model", "ieu", "finetune"),
    )
