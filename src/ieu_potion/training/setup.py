"""What every method builds the same way: views for a model, evaluation, backbones, the
gate (``defences/registry.Task.finetune`` trains a copy of a model)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, Strict, model_validator
from torch import nn

from ieu_potion.config import Block, Count, Text
from ieu_potion.data.imageset import ImageSet
from ieu_potion.models import ModelSpec, build_model, input_size, is_vit, normalisation
from ieu_potion.models.factory import (
    WEIGHT_SOURCES,
    load_backbone,
    meta_model,
    read_state_dict,
    shallow_vit,
)
from ieu_potion.training.engine import (
    CrossEntropy,
    History,
    TrainConfig,
    accuracy,
    fit,
    seed_everything,
)
from ieu_potion.training.engine import clean_accuracy_and_asr as _ca_asr
from ieu_potion.training.views import VIEWS, ViewMaker

log = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    """The configured pretrained weights cannot be had (offline, say)."""


class ModelParams(Block):
    """A timm model: ``model.robust`` (the defended model) or ``model.gate``."""

    name: Text = Field(description="any timm model name, or resnet9 (models/resnet9.py)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="timm constructor")
    image_size: Annotated[int, Strict(), Field(ge=8, le=1024)] | None = Field(
        None, description="input side; null: timm's configured size"
    )

    @model_validator(mode="after")
    def _known(self) -> ModelParams:
        meta_model(self.spec(2))  # the name, and the kwargs built on the meta device
        return self

    def spec(self, num_classes: int, **kwargs: Any) -> ModelSpec:
        """The model for a data set of ``num_classes``, ``kwargs`` over the configured."""
        return ModelSpec(self.name, num_classes, {**self.kwargs, **kwargs}, self.image_size)


class WeightsParams(Block):
    """``model.weights``: where the robust module's starting weights come from."""

    source: Literal[WEIGHT_SOURCES] = Field(
        description="pretrain (offline default) | checkpoint | timm (online) | scratch"
    )
    path: Text | None = Field(None, description="checkpoint: a .safetensors or .pth/.pt file")

    @model_validator(mode="after")
    def _path(self) -> WeightsParams:
        if self.source == "checkpoint" and self.path is None:
            raise ValueError("weight source 'checkpoint' needs a path")
        local = self.path is not None and "://" not in self.path
        if self.source == "checkpoint" and local and not Path(self.path).is_file():
            raise ValueError(
                f"weight source 'checkpoint': no file at {self.path!r} (a .safetensors or "
                ".pth/.pt state dict; a relative path is read from the project folder)"
            )
        return self


View = Literal[VIEWS]


class PretrainParams(Block):
    """``model.pretrain``: the offline backbone's training on the clean split."""

    views: Annotated[tuple[View, ...], Field(min_length=1)] = ("plain",)
    train: TrainConfig


GATE_OBJECTIVES = ("task", "rotation")


class GatePretrainParams(PretrainParams):
    """``model.gate_pretrain``: the gate's pretraining, then truncation."""

    depth: Count = Field(description="ViT blocks pretrained (then truncated to gate_depth)")
    objective: Literal[GATE_OBJECTIVES] = Field(
        "task",
        description="task: the clean split's labels | rotation: which quarter turn each "
        "clean image was given (self-supervised: the gate does not know the task's classes)",
    )


ROTATIONS = ("0 deg", "90 deg", "180 deg", "270 deg")


def rotation_task(images: ImageSet) -> ImageSet:
    """Every image of ``images`` turned by 0, 90, 180 and 270 degrees, labelled with its
    turn (a self-supervised task: the original labels are dropped)."""
    height, width = images.image_size
    if height != width:
        raise ValueError(f"the rotation objective needs square images, got {height}x{width} px")
    turned = [np.rot90(images.images, k, axes=(1, 2)) for k in range(len(ROTATIONS))]
    labels = np.repeat(np.arange(len(ROTATIONS)), len(images))
    return ImageSet.clean(np.concatenate(turned), labels, ROTATIONS)


class ModelBlock(Block):
    robust: ModelParams
    gate: ModelParams
    gate_pretrain: GatePretrainParams | None = None
    weights: WeightsParams
    pretrain: PretrainParams


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
        try:
            model = build_model(spec, pretrained=True)
        except (OSError, RuntimeError) as exc:  # the hub's network and cache errors
            raise WeightsUnavailableError(
                f"model.weights.source 'timm': no pretrained {spec.name!r} weights from timm "
                f"({type(exc).__name__}); timm needs the internet or its cache for them. "
                "Offline, use source 'checkpoint' with a local file, or 'pretrain'"
            ) from None
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


def make_gate(
    backbone: nn.Module, gate: ModelParams, depth: int, seed: int, num_classes: int
) -> nn.Module:
    """The poisoned module: the backbone ViT truncated to ``depth`` blocks with a fresh
    head for ``num_classes``, or, where the backbone is no ViT, the configured ViT from
    scratch; its new weights are drawn from ``seed``."""
    seed_everything(seed)
    if is_vit(backbone):
        return shallow_vit(backbone, depth, num_classes)
    return build_model(gate.spec(num_classes, depth=depth))
