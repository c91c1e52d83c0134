"""ieu_finetune nodes: backbone weights, IEU stage 1 (gate) and stage 2 (robust module)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.ieu import IEUConfig, IEUObjective, confidence, gate_scores
from ieu_potion.models import ModelSpec
from ieu_potion.results import RunKey, final_metrics
from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit, predict
from ieu_potion.training.setup import finetune, make_gate, prepare_backbone, view_maker


def backbone(pretrain_images: ImageSet, clean_test: ImageSet, model: dict[str, Any], seed: int):
    spec = ModelSpec.from_params(model["robust"], pretrain_images.num_classes)
    net, history = prepare_backbone(
        spec, model["weights"], pretrain_images, clean_test, model["pretrain"], seed
    )
    return net, history.table()


def train_gate(
    backbone: nn.Module,
    poisoned_train: ImageSet,
    model: dict[str, Any],
    ieu: dict[str, Any],
    key: RunKey,
):
    """Stage 1: the shallow poisoned module, plain CE on the unaugmented view.  After each
    epoch the gate's flags (confidence > tau) on the training set are scored against the
    ground truth, which shows how isolation develops (stage 2 freezes the gate)."""
    config = IEUConfig.from_params(ieu["defence"])
    training = key.replicate(TrainConfig.from_params(ieu["gate_training"]))
    gate = make_gate(backbone, model["gate"], config.gate_depth, training.seed)
    history = fit(
        gate,
        poisoned_train,
        CrossEntropy(("plain",)),
        training,
        view_maker(gate, training),
        evaluate=lambda g: gate_scores(
            gate_confidences(g, poisoned_train)["confidence"] > config.tau,
            poisoned_train.poisoned,
        ),
        name="gate",
    )
    return gate, history.table()


def gate_confidences(gate: nn.Module, poisoned_train: ImageSet) -> dict[str, np.ndarray]:
    """The gate's confidence on every training sample, with the ground truth beside it."""
    return {
        "confidence": confidence(predict(gate, poisoned_train, view_maker(gate))),
        "poisoned": poisoned_train.poisoned,
        "labels": poisoned_train.labels,
    }


def finetune_ieu(
    backbone: nn.Module,
    gate: nn.Module,
    poisoned_train: ImageSet,
    clean_test: ImageSet,
    triggered_test: ImageSet,
    finetune_params: dict[str, Any],
    ieu: dict[str, Any],
    attack: dict[str, Any],
    key: RunKey,
):
    """Stage 2: the robust module learns what the gate lets through and unlearns the rest."""
    config = key.replicate(TrainConfig.from_params(finetune_params))
    objective = IEUObjective(
        gate,
        view_maker(gate),
        IEUConfig.from_params(ieu["defence"]),
        poisoned_train.num_classes,
        config.batch_size,
        config.clip,
        poisoned_train.poisoned,
        config.torch_device(),
    )
    model, history = finetune(
        backbone,
        poisoned_train,
        clean_test,
        triggered_test,
        config,
        objective,
        attack["target_class"],
        "ieu",
    )
    table = history.table()
    return model, table, key.rows("ieu", final_metrics(table, history.seconds))
