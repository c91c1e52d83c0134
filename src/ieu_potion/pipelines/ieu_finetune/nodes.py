"""ieu_finetune nodes: backbone weights, IEU stage 1 (gate) and stage 2 (robust module)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from torch import nn

from ieu_potion.config import settings_from_params
from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.ieu import IEUConfig, IEUObjective, confidence, gate_scores
from ieu_potion.defences.registry import Task, peak_memory
from ieu_potion.defences.threshold import Split, otsu_split, text_histogram
from ieu_potion.results import RunKey, final_metrics
from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit, predict
from ieu_potion.training.setup import (
    ModelBlock,
    WeightsParams,
    make_gate,
    prepare_backbone,
    view_maker,
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
    blocks, pretrained on the clean split as the backbone is (the offline stand-in for the
    paper's ImageNet-pretrained ViT); ``train_gate`` truncates it to the gate's depth with
    a fresh head."""
    block = _model_block(model)
    settings = block.gate_pretrain
    spec = block.gate.spec(pretrain_images.num_classes, depth=settings.depth)
    net, history = prepare_backbone(
        spec, WeightsParams(source="pretrain"), pretrain_images, clean_test, settings, seed
    )
    return net, history.table()


def train_gate(
    backbone: nn.Module,
    poisoned_train: ImageSet,
    model: dict[str, Any],
    ieu: dict[str, Any],
    finetune_params: dict[str, Any],
    key: RunKey,
):
    """Stage 1: the shallow poisoned module, plain CE on the unaugmented view.

    After each epoch the gate's confidences on the training set are split as ``tau: auto``
    would split them (``defences/threshold.py``, no ground truth); the history records the
    separation, that tau and the flags' precision/recall against the ground truth (scoring
    only).  ``gate_epoch: separation`` keeps the epoch that separates best, ``last`` the
    final one; stage 2 freezes the gate kept."""
    config = IEUConfig.from_params(ieu["defence"])
    training = key.replicate(TrainConfig.from_params(ieu["gate_training"]))
    least = min_flagged(config, finetune_params)
    gate = make_gate(backbone, _model_block(model).gate, config.gate_depth, training.seed)
    best: dict[str, Any] = {"epoch": 0, "separation": -math.inf}
    epoch = 0

    def evaluate(g: nn.Module) -> dict[str, float]:
        nonlocal epoch
        epoch += 1
        conf = gate_confidences(g, poisoned_train)["confidence"]
        raw = otsu_split(conf, least)
        split = usable(config, raw)
        tau = stage_two_tau(config, split)
        if split and split.separation > best["separation"]:
            best.update(
                epoch=epoch,
                separation=split.separation,
                state={k: v.detach().clone() for k, v in g.state_dict().items()},
            )
        return {
            "separation": raw.separation if raw else math.nan,
            "gate_tau": tau,
            **gate_scores(conf > tau, poisoned_train.poisoned),
        }

    history = fit(
        gate,
        poisoned_train,
        CrossEntropy(("plain",)),
        training,
        view_maker(gate, training),
        evaluate=evaluate,
        name="gate",
    )
    table = history.table()
    kept = len(table)
    if config.gate_epoch == "separation":
        if best["epoch"]:
            gate.load_state_dict(best["state"])
            kept = best["epoch"]
        else:
            log.warning(
                "gate: no epoch left a confident minority of >= %d samples separated by "
                ">= %g; keeping the last",
                least,
                config.min_separation,
            )
    table["kept"] = table.epoch == kept
    log.info(
        "gate: kept epoch %d of %d (gate_epoch %s, separation %.3g)",
        kept,
        len(table),
        config.gate_epoch,
        table.separation.iloc[kept - 1],
    )
    return gate, table


def usable(config: IEUConfig, split: Split | None) -> Split | None:
    """``split`` where it separates by at least ``min_separation``; else None (the
    confidences show no confident minority: no learned trigger to gate)."""
    return split if split and split.separation >= config.min_separation else None


def stage_two_tau(config: IEUConfig, split: Split | None) -> float:
    """The configured tau, or with ``tau: auto`` the cut's; 1 (nothing flagged) where the
    confidences allow no cut."""
    if config.tau != "auto":
        return float(config.tau)
    return split.tau if split else 1.0


def min_flagged(config: IEUConfig, finetune_params: dict[str, Any]) -> int:
    """The fewest flagged samples ``tau: auto`` accepts: one unlearning batch (the queue
    capacity), since fewer flags per epoch never trigger an unlearning step."""
    return config.queue_capacity or TrainConfig.from_params(finetune_params).batch_size


def gate_confidences(gate: nn.Module, poisoned_train: ImageSet) -> dict[str, np.ndarray]:
    """The gate's confidence on every training sample, with the ground truth beside it."""
    return {
        "confidence": confidence(predict(gate, poisoned_train, view_maker(gate))),
        "poisoned": poisoned_train.poisoned,
        "labels": poisoned_train.labels,
    }


def gate_threshold(
    gate: nn.Module,
    poisoned_train: ImageSet,
    ieu: dict[str, Any],
    finetune_params: dict[str, Any],
) -> dict[str, np.ndarray]:
    """The kept gate's confidences on the training set with the threshold stage 2 uses
    (``tau``): the configured value, or with ``tau: auto`` the Otsu cut of these
    confidences.  Where no cut leaves a confident minority, tau is 1 (nothing flagged: IEU
    becomes plain finetuning) and a warning says so."""
    config = IEUConfig.from_params(ieu["defence"])
    arrays = gate_confidences(gate, poisoned_train)
    conf = arrays["confidence"]
    raw = otsu_split(conf, min_flagged(config, finetune_params))
    split = usable(config, raw)
    tau = stage_two_tau(config, split)
    if config.tau == "auto":
        if split is None:
            log.warning(
                "tau auto: the gate's confidences show no confident minority (best cut's "
                "separation %.3g, below min_separation %g); nothing is flagged and IEU's "
                "stage 2 is plain finetuning",
                raw.separation if raw else math.nan,
                config.min_separation,
            )
        else:
            log.info(
                "tau auto: %.4f (separation %.3g, %d of %d samples flagged, %.1f%%)",
                tau,
                split.separation,
                split.flagged,
                split.total,
                100 * split.share,
            )
    log.info("gate confidences, tau in the starred bin: %s", text_histogram(conf, tau))
    return {**arrays, "tau": np.array(tau)}


def finetune_ieu(
    backbone: nn.Module,
    gate: nn.Module,
    gate_confidence: dict[str, np.ndarray],
    poisoned_train: ImageSet,
    clean_test: ImageSet,
    triggered_test: ImageSet,
    finetune_params: dict[str, Any],
    ieu: dict[str, Any],
    attack: dict[str, Any],
    key: RunKey,
):
    """Stage 2: the robust module learns what the gate lets through and unlearns the rest;
    the gate flags confidences above ``gate_confidence["tau"]``."""
    task = Task.of_run(
        backbone, poisoned_train, clean_test, triggered_test, finetune_params, attack, key
    )
    config = task.recipe
    tau = float(gate_confidence["tau"])
    objective = IEUObjective(
        gate,
        view_maker(gate),
        IEUConfig.from_params(ieu["defence"]),
        tau,
        poisoned_train.num_classes,
        config.batch_size,
        config.clip,
        poisoned_train.poisoned,
        config.torch_device(),
    )
    with peak_memory(config.torch_device()) as memory:
        model, history = task.finetune(objective, "ieu")
    table = history.table()
    metrics = {**final_metrics(table, history.seconds), "gate_tau": tau, **memory}
    return model, table, key.rows("ieu", metrics)
