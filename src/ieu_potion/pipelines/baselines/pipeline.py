"""baselines: per attack namespace, each defence listed in ``baselines.methods`` (the
registry's names: none, abl, ibau, attnblock) beside the undefended finetune."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.defences.registry import DEFENCES, listed_methods
from ieu_potion.pipelines.baselines import nodes
from ieu_potion.pipelines.templating import (
    Replicate,
    bound,
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


def defence_node(method: str, replicate: Replicate):
    defence = DEFENCES[method]
    inputs = {
        "backbone": "backbone",
        "poisoned_train": "poisoned_train",
        "clean_test": "clean_test",
        "triggered_test": "triggered_test",
        "finetune_params": "params:finetune",
        "baselines": "params:baselines",
        "attack": "params:namespace.attack",
    }
    if "undefended" in defence.needs:
        inputs["undefended"] = "none_model"
    if "trusted" in defence.needs:
        inputs["trusted"] = "trusted_images"
    outputs = [f"{method}_history", f"results_{method}"]
    if defence.makes_model:
        outputs.insert(0, f"{method}_model")
    return node(
        bound(nodes.defend, method=method, key=replicate.key(method)),
        inputs,
        outputs,
        name=f"defend_{method}",
    )


def baselines_template(replicate: Replicate) -> Pipeline:
    listed = namespaces(replicate.params, "baselines")
    chosen = methods(replicate.params) if replicate.namespace in listed else ["none"]
    return pipeline([defence_node(m, replicate) for m in chosen])


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
