"""What every method builds the same way: views for a model, evaluation, backbones, the
gate (``defences/registry.Task.finetune`` trains a copy of a model)."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.models import ModelSpec, build_model, input_size, is_vit, normalisation
from ieu_potion.models.factory import load_backbone, read_state_dict, shallow_vit
from ieu_potion.training.engine import (
    CrossEntropy,
    History,
    TrainConfig,
    accuracy,
    fit,
    seed_everything,
)
from ieu_potion.training.engine import clean_accuracy_and_asr as _ca_asr
from ieu_potion.training.views import ViewMaker

if TYPE_CHECKING:  # the schema imports this module's users; only types are needed here
    from ieu_potion.schema import ModelParams, PretrainParams, WeightsParams

log = logging.getLogger(__name__)


def view_maker(model: nn.Module, config: TrainConfig | None = None) -> ViewMaker:
    """Views at the model's input size and normalisation, augmented as ``config`` says."""
    mean, std = normalisation(model)
    augment = config.augment if config is not None else {}
    return ViewMaker(size=input_size(model), mean=mean, std=std, **augment)


def evaluator(clean_test: ImageSet, triggered_test: ImageSet, target_class: int, views):
    def evaluate(model: nn.Module) -> dict[str, float]:
        return _ca_asr(model, clean_test, triggered_test, target_class, views)

    return evaluate


def prepare_backbone(
    spec: ModelSpec,
    weights: WeightsParams,
    pretrain_set: ImageSet,
    test_set: ImageSet,
    pretrain: PretrainParams,
    seed: int = 0,
) -> tuple[nn.Module, History]:
    """The robust module's starting weights, from the configured source.

    ``pretrain`` (the offline default) trains from scratch on the clean pretraining split;
    ``checkpoint`` loads a local file; ``timm`` lets timm download its pretrained weights
    (opt-in: needs the internet); ``scratch`` starts from random weights.  The head is
    always fresh for the data set's classes.  ``seed`` is added to the pretraining seed,
    which also seeds the model's initial weights (and the fresh head).
    """
    source = weights.source
    history = History()
    config = dataclasses.replace(pretrain.train, seed=pretrain.train.seed + seed)
    seed_everything(config.seed)
    if source == "timm":
        log.info("asking timm for pretrained %s weights (downloads if not cached)", spec.name)
        model = build_model(spec, pretrained=True)
    else:
        model = build_model(spec)
    if source == "checkpoint":
        load_backbone(model, read_state_dict(weights.path), str(weights.path))
    elif source == "pretrain":
        if len(pretrain_set) == 0:
            raise ValueError(
                "weight source 'pretrain' needs a non-empty pretraining split "
                "(data_split.pretrain_fraction > 0)"
            )
        views = view_maker(model, config)
        history = fit(
            model,
            pretrain_set,
            CrossEntropy(pretrain.views),
            config,
            views,
            evaluate=lambda m: {
                "clean_accuracy": accuracy(m, test_set, views, test_set.true_labels)
            },
            name="pretrain",
        )
    return model, history


def make_gate(backbone: nn.Module, gate: ModelParams, depth: int, seed: int) -> nn.Module:
    """The poisoned module: the backbone ViT truncated to ``depth`` blocks with a fresh
    head, or, where the robust module is no ViT, the configured ViT from scratch; its new
    weights are drawn from ``seed``."""
    seed_everything(seed)
    if is_vit(backbone):
        return shallow_vit(backbone, depth)
    return build_model(gate.spec(backbone.spec.num_classes, depth=depth))
