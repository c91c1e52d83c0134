"""baselines nodes: the undefended finetune ("none") on the poisoned training set."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.reporting.results import run_summary
from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit
from ieu_potion.training.setup import evaluator, view_maker


def finetune_undefended(
    backbone: nn.Module,
    poisoned_train: ImageSet,
    clean_test: ImageSet,
    triggered_test: ImageSet,
    finetune: dict[str, Any],
    attack: dict[str, Any],
    dataset_name: str,
):
    """Plain CE on the clean and corrupted crops, the same schedule as IEU's stage 2."""
    model = copy.deepcopy(backbone)
    config = TrainConfig.from_params(finetune)
    views = view_maker(model, config)
    history = fit(
        model,
        poisoned_train,
        CrossEntropy(("clean", "corrupted")),
        config,
        views,
        evaluator(clean_test, triggered_test, attack["target_class"], views),
        name="undefended",
    )
    rows = run_summary(history, dataset_name, attack["name"], "none", config.seed)
    return model, history.table(), rows
