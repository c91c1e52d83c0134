"""baselines: per attack namespace, each defence listed in ``baselines.methods`` (the
registry's names: none, abl, abl_oracle, ibau, attnblock) beside the undefended finetune."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.defences.registry import DEFENCES, listed_methods
from ieu_potion.pipelines.baselines import nodes
from ieu_potion.pipelines.defence_nodes import defence_nodes
from ieu_potion.pipelines.templating import (
    Replicate,
    namespaces,
    per_namespace,
    shared_parameters,
)


def methods(params: dict[str, Any]) -> list[str]:
    """``baselines.methods`` in run order: ``none`` first (post-training defences repair
    its model, so it is added where one needs it)."""
    listed = listed_methods(params.get("baselines") or {})
    if any("undefended" in DEFENCES[m].needs for m in listed) and "none" not in listed:
        listed.insert(0, "none")
    return sorted(listed, key=lambda m: m != "none")


def needs_trusted(params: dict[str, Any]) -> bool:
    return any("trusted" in DEFENCES[m].needs for m in methods(params))


def baselines_template(replicate: Replicate) -> Pipeline:
    listed = namespaces(replicate.params, "baselines")
    chosen = methods(replicate.params) if replicate.namespace in listed else ["none"]
    return pipeline([n for m in chosen for n in defence_nodes(m, replicate)])


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    """The listed defences for ``baselines.attacks``, and the undefended finetune for
    every namespace Potion repairs (it needs that model)."""
    trusted = Pipeline([])
    if needs_trusted(params):
        trusted = pipeline(
            [
                node(
                    nodes.trusted_set,
                    ["pretrain_images", "finetune_images", "params:baselines"],
                    "trusted_images",
                    name="trusted_set",
                    tags=["baselines"],
                )
            ]
        )
    per_attack = per_namespace(
        baselines_template,
        params,
        "baselines",
        {"backbone", "clean_test", "trusted_images"},
        shared_parameters("finetune", "baselines"),
        extra=tuple(namespaces(params, "potion_unlearning")),
    )
    return trusted + per_attack
