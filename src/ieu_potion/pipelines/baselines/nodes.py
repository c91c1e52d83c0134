"""baselines nodes: the undefended finetune ("none") on the poisoned training set."""

from __future__ import annotations

from typing import Any

from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.results import RunKey, final_metrics
from ieu_potion.training.engine import CrossEntropy, TrainConfig
from ieu_potion.training.setup import finetune


def finetune_undefended(
    backbone: nn.Module,
    poisoned_train: ImageSet,
    clean_test: ImageSet,
    triggered_test: ImageSet,
    finetune_params: dict[str, Any],
    attack: dict[str, Any],
    key: RunKey,
):
    """Plain CE on the clean and corrupted crops, the same schedule as IEU's stage 2."""
    model, history = finetune(
        backbone,
        poisoned_train,
        clean_test,
        triggered_test,
        key.replicate(TrainConfig.from_params(finetune_params)),
        CrossEntropy(("clean", "corrupted")),
        attack["target_class"],
        "none",
    )
    table = history.table()
    return model, table, key.rows("none", final_metrics(table, history.seconds))
