"""ieu_finetune nodes: the backbone weights (and a pretrained gate ViT's); IEU itself runs
through the defence registry (``pipelines/defence_nodes.py``)."""

from __future__ import annotations

import logging
from typing import Any

from ieu_potion.config import settings_from_params
from ieu_potion.data.imageset import ImageSet
from ieu_potion.training.setup import (
    ModelBlock,
    WeightsParams,
    prepare_backbone,
    rotation_task,
)

log = logging.getLogger(__name__)


def _model_block(model: dict[str, Any]) -> ModelBlock:
    return settings_from_params(ModelBlock, model, "model")


def backbone(pretrain_images: ImageSet, clean_test: ImageSet, model: dict[str, Any], seed: int):
    block = _model_block(model)
    spec = block.robust.spec(pretrain_images.num_classes)
    net, history = prepare_backbone(
        spec, block.weights, pretrain_images, clean_test, block.pretrain, seed
    )
    return net, history.table()


def gate_backbone(
    pretrain_images: ImageSet, clean_test: ImageSet, model: dict[str, Any], seed: int
):
    """With ``model.gate_pretrain``: the configured gate ViT at ``gate_pretrain.depth``
    blocks, pretrained on the clean split (the offline stand-in for the paper's
    ImageNet-pretrained ViT); ``train_gate`` truncates it to the gate's depth with a fresh
    head.  Objective ``task`` trains it on the split's labels, as the backbone is;
    ``rotation`` on which quarter turn each image was given, so that the gate starts with
    features of these images but no knowledge of their classes."""
    block = _model_block(model)
    settings = block.gate_pretrain
    if settings.objective == "rotation":
        pretrain_images, clean_test = rotation_task(pretrain_images), rotation_task(clean_test)
        log.info(
            "gate pretraining: rotation objective on %d turned images (4 per clean image)",
            len(pretrain_images),
        )
    spec = block.gate.spec(pretrain_images.num_classes, depth=settings.depth)
    net, history = prepare_backbone(
        spec, WeightsParams(source="pretrain"), pretrain_images, clean_test, settings, seed
    )
    return net, history.table()
