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


def gate_pretrained(params: dict[str, Any]) -> bool:
    return bool((params.get("model") or {}).get("gate_pretrain"))


def backbone_pipeline(params: dict[str, Any]) -> Pipeline:
    """The robust module's starting weights (and with ``model.gate_pretrain`` the gate's):
    one shared by every attack and seed (the default), or one per seed
    (``backbone_per_seed``, namespace ``seed_<s>``)."""
    copies = []
    for seed in seeds(params) if backbone_namespace(params, 0) else [0]:
        builders = [(nodes.backbone, "backbone")]
        if gate_pretrained(params):
            builders.append((nodes.gate_backbone, "gate_backbone"))
        template = pipeline(
            [
                node(
                    bound(build, seed=seed),
                    ["pretrain_images", "clean_test", "params:model"],
                    [name, f"{name}_history"],
                    name=name,
                    tags=["models"],
                )
                for build, name in builders
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
    start = "gate_backbone" if gate_pretrained(replicate.params) else "backbone"
    return pipeline(
        [
            node(
                bound(nodes.train_gate, key=key),
                [start, "poisoned_train", "params:model", "params:ieu", "params:finetune"],
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
                    "params:namespace.attack",
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
        {"backbone", "gate_backbone", "clean_test"},
        shared_parameters("model", "ieu", "finetune"),
    )
