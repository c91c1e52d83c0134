"""data_poisoning nodes: thin adapters from catalog data and parameters to library code."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from ieu_potion.attacks import AttackConfig, discovery_subsets, poison_training_set
from ieu_potion.attacks import triggered_test_set as _triggered_test_set
from ieu_potion.data.imageset import ImageSet
from ieu_potion.data.split import split_pretraining
from ieu_potion.reporting.gallery import attack_gallery
from ieu_potion.results import RunKey


def split_source(source: dict[str, ImageSet], params: dict[str, Any]):
    """(clean pretraining set, clean finetuning set, clean test set)."""
    pretrain, finetune = split_pretraining(
        source["train"], params["pretrain_fraction"], params["seed"]
    )
    return pretrain, finetune, source["test"]


def poison_train(finetune: ImageSet, attack: dict[str, Any], key: RunKey) -> ImageSet:
    return poison_training_set(finetune, key.replicate(AttackConfig.from_params(attack)))


def trigger_test(test: ImageSet, attack: dict[str, Any], key: RunKey) -> ImageSet:
    return _triggered_test_set(test, key.replicate(AttackConfig.from_params(attack)))


def draw_discovery_subsets(
    poisoned: ImageSet, discovery: dict[str, Any], key: RunKey
) -> dict[str, np.ndarray]:
    return discovery_subsets(poisoned, discovery["shares"], discovery["seed"] + key.seed)


def gallery(
    test: ImageSet, triggered: ImageSet, attack: dict[str, Any], examples: int
) -> go.Figure:
    return attack_gallery(test, triggered, attack["name"], examples)
