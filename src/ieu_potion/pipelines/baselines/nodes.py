"""baselines nodes: a small trusted clean set, and any registered defence on one attack
namespace (``defences/registry.py``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.registry import Task, get_defence, run_defence, trusted_settings
from ieu_potion.results import RunKey

log = logging.getLogger(__name__)


def trusted_set(pretrain_images: ImageSet, finetune_images: ImageSet, baselines: dict[str, Any]):
    """The defender's small clean set (I-BAU's): ``baselines.trusted.fraction`` of the
    finetuning set's size, drawn with its ``seed`` from the clean pretraining split, which
    shares no image with the finetuning or test sets (BackdoorBench gives I-BAU 5% of the
    training set as clean data)."""
    trusted = trusted_settings(baselines)
    count = max(1, int(round(trusted.fraction * len(finetune_images))))
    if len(pretrain_images) < count:
        raise ValueError(
            f"baselines.trusted asks for {count} clean samples but the pretraining split "
            f"holds {len(pretrain_images)}; raise data_split.pretrain_fraction or lower "
            "baselines.trusted.fraction"
        )
    rng = np.random.default_rng(trusted.seed)
    chosen = np.sort(rng.choice(len(pretrain_images), count, replace=False))
    log.info("trusted clean set: %d samples from the pretraining split", count)
    return pretrain_images.subset(chosen)


def defend(
    backbone: nn.Module,
    poisoned_train: ImageSet,
    clean_test: ImageSet,
    triggered_test: ImageSet,
    finetune_params: dict[str, Any],
    baselines: dict[str, Any],
    attack: dict[str, Any],
    method: str,
    key: RunKey,
    undefended: nn.Module | None = None,
    trusted: ImageSet | None = None,
):
    """The defence ``method`` on this namespace: its model (where it makes one), its
    history and its results rows (CA, ASR, healed, seconds, peak memory, its own)."""
    defence = get_defence(method)
    task = Task.of_run(
        backbone,
        poisoned_train,
        clean_test,
        triggered_test,
        finetune_params,
        attack,
        key,
        undefended=undefended,
        trusted=trusted,
    )
    outcome = run_defence(defence, task, defence.configure(baselines.get(method)))
    rows = key.rows(method, outcome.metrics)
    if defence.makes_model:
        return outcome.model, outcome.history, rows
    return outcome.history, rows
