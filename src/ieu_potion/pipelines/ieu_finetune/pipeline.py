"""ieu_finetune: the backbone, then per attack namespace IEU's two stages."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.defence_nodes import defence_nodes
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
    return Pipeline(copies)  # one construction: summing pipelines one by one is quadratic


def ieu_template(replicate: Replicate) -> Pipeline:
    """IEU's stages (gate, threshold) and stage 2, as the defence registry has them."""
    return pipeline(
        defence_nodes("ieu", replicate, gate_backbone=gate_pretrained(replicate.params))
    )


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    return per_namespace(
        ieu_template,
        params,
        "ieu_finetune",
        {"backbone", "gate_backbone", "clean_test"},
        shared_parameters("model", "ieu", "finetune"),
    )
