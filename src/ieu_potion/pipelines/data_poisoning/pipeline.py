"""data_poisoning: split the source data, then one namespaced template per attack.

The attacks to run are the namespaces listed in ``data_poisoning.attacks``; each needs a
parameter block ``<namespace>.attack``.  Adding an attack is a YAML edit.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.data_poisoning import nodes
from ieu_potion.pipelines.templating import Replicate, bound, per_namespace


def split_pipeline() -> Pipeline:
    return pipeline(
        [
            node(
                nodes.split_source,
                inputs=["source_images", "params:data_split"],
                outputs=["pretrain_images", "finetune_images", "clean_test"],
                name="split_source",
                tags=["data_poisoning"],
            )
        ]
    )


def attack_template(replicate: Replicate) -> Pipeline:
    key = replicate.key("data")
    return pipeline(
        [
            node(
                bound(nodes.poison_train, key=key),
                ["finetune_images", "params:namespace.attack"],
                "poisoned_train",
                name="poison_train",
            ),
            node(
                bound(nodes.trigger_test, key=key),
                ["clean_test", "params:namespace.attack"],
                "triggered_test",
                name="trigger_test",
            ),
            node(
                bound(nodes.draw_discovery_subsets, key=key),
                ["poisoned_train", "params:discovery"],
                "discovery_subsets",
                name="draw_discovery_subsets",
            ),
            node(
                nodes.gallery,
                [
                    "clean_test",
                    "triggered_test",
                    "params:namespace.attack",
                    "params:gallery_examples",
                ],
                "attack_gallery",
                name="attack_gallery",
            ),
        ]
    )


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    shared = {
        "params:discovery": "params:data_poisoning.discovery",
        "params:gallery_examples": "params:data_poisoning.gallery_examples",
    }
    per_attack = per_namespace(
        attack_template, params, "data_poisoning", {"finetune_images", "clean_test"}, shared
    )
    return split_pipeline() + per_attack
