"""data_poisoning: split the source data, then one namespaced template per attack.

The attacks to run are the namespaces listed in ``data_poisoning.attacks``; each needs a
parameter block ``<namespace>.attack``.  Adding an attack is a YAML edit.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ieu_potion.pipelines.data_poisoning import nodes
from ieu_potion.pipelines.templating import (
    Replicate,
    bound,
    namespaces,
    per_namespace,
    uses_codec,
)


def split_pipeline(params: dict[str, Any]) -> Pipeline:
    nodes_ = [
        node(
            nodes.split_source,
            inputs=["source_images", "params:data_split"],
            outputs=["pretrain_images", "finetune_images", "clean_test"],
            name="split_source",
            tags=["data_poisoning"],
        )
    ]
    if any(uses_codec(params, ns) for ns in namespaces(params, "data_poisoning")):
        nodes_.append(
            node(
                nodes.train_stega_codec,
                inputs=["pretrain_images", "params:data_poisoning.stega_codec"],
                outputs="stega_codec",
                name="train_stega_codec",
                tags=["data_poisoning"],
            )
        )
    return pipeline(nodes_)


def attack_template(replicate: Replicate) -> Pipeline:
    key = replicate.key("data")
    codec = ["stega_codec"] if uses_codec(replicate.params, replicate.namespace) else []
    report = ["codec_report"] if codec else []
    nodes_ = [
        node(
            bound(nodes.poison_train, key=key),
            ["finetune_images", "params:namespace.attack", *codec],
            "poisoned_train",
            name="poison_train",
        ),
        node(
            bound(nodes.trigger_test, key=key),
            ["clean_test", "params:namespace.attack", *codec],
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
                *report,
            ],
            "attack_gallery",
            name="attack_gallery",
        ),
    ]
    if codec:
        inputs = [
            "clean_test",
            "triggered_test",
            "poisoned_train",
            *codec,
            "params:namespace.attack",
        ]
        nodes_.append(
            node(bound(nodes.codec_report, key=key), inputs, "codec_report", name="codec_report")
        )
    return pipeline(nodes_)


def create_pipeline(params: dict[str, Any]) -> Pipeline:
    shared = {
        "params:discovery": "params:data_poisoning.discovery",
        "params:gallery_examples": "params:data_poisoning.gallery_examples",
    }
    per_attack = per_namespace(
        attack_template,
        params,
        "data_poisoning",
        {"finetune_images", "clean_test", "stega_codec"},
        shared,
    )
    return split_pipeline(params) + per_attack
