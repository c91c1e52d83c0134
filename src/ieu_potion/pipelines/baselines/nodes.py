"""baselines nodes: a small trusted clean set (the defences themselves run through
``pipelines/defence_nodes.py``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.registry import trusted_settings

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
