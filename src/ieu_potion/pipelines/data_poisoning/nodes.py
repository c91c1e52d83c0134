"""data_poisoning nodes: thin adapters from catalog data and parameters to library code."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from ieu_potion.attacks import AttackConfig, discovery_subsets, poison_training_set
from ieu_potion.attacks import triggered_test_set as _triggered_test_set
from ieu_potion.attacks.stega import (
    CodecConfig,
    StegaCodec,
    decode_images,
    residual_size,
    train_codec,
)
from ieu_potion.config import settings_from_params
from ieu_potion.data.imageset import ImageSet
from ieu_potion.data.split import split_pretraining
from ieu_potion.reporting.gallery import attack_gallery
from ieu_potion.results import RunKey
from ieu_potion.schema import DiscoveryParams, SplitParams


def split_source(source: dict[str, ImageSet], params: dict[str, Any]):
    """(clean pretraining set, clean finetuning set, clean test set)."""
    split = settings_from_params(SplitParams, params, "data_split")
    pretrain, finetune = split_pretraining(source["train"], split.pretrain_fraction, split.seed)
    return pretrain, finetune, source["test"]


def train_stega_codec(pretrain: ImageSet, params: dict[str, Any]) -> StegaCodec:
    """ISSBA's encoder/decoder, trained on the clean pretraining images."""
    return train_codec(pretrain.images, CodecConfig.from_params(params))


def poison_train(
    finetune: ImageSet, attack: dict[str, Any], codec: StegaCodec | None = None, *, key: RunKey
) -> ImageSet:
    return poison_training_set(finetune, key.replicate(AttackConfig.from_params(attack)), codec)


def trigger_test(
    test: ImageSet, attack: dict[str, Any], codec: StegaCodec | None = None, *, key: RunKey
) -> ImageSet:
    return _triggered_test_set(test, key.replicate(AttackConfig.from_params(attack)), codec)


def codec_report(
    test: ImageSet,
    triggered: ImageSet,
    poisoned: ImageSet,
    codec: StegaCodec,
    attack: dict[str, Any],
    key: RunKey,
) -> dict[str, Any]:
    """What an ISSBA poisoning hid and how well: the secret, the decoder's bit accuracy on
    the triggered test images, the residual's PSNR and largest change, and the poisoned
    training indices."""
    config = key.replicate(AttackConfig.from_params(attack))
    secret = config.trigger(test.image_size, codec).secret
    originals = test.images[test.true_labels != config.target_class]
    return {
        "secret": "".join(str(b) for b in secret),
        "bit_accuracy": float((decode_images(codec, triggered.images) == secret).mean()),
        **residual_size(originals, triggered.images),
        "codec_heldout": codec.metrics,
        "poison_indices": np.flatnonzero(poisoned.poisoned).tolist(),
    }


def draw_discovery_subsets(
    poisoned: ImageSet, discovery: dict[str, Any], key: RunKey
) -> dict[str, np.ndarray]:
    drawn = settings_from_params(DiscoveryParams, discovery, "data_poisoning.discovery")
    return discovery_subsets(poisoned, list(drawn.shares), drawn.seed + key.seed)


def gallery(
    test: ImageSet,
    triggered: ImageSet,
    attack: dict[str, Any],
    examples: int,
    report: dict[str, Any] | None = None,
) -> go.Figure:
    name = AttackConfig.from_params(attack).name
    return attack_gallery(test, triggered, name, examples, report)
