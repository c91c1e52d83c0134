"""Reserve a clean pretraining split that no attack ever touches."""

from __future__ import annotations

import logging

import numpy as np

from ieu_potion.data.imageset import ImageSet

log = logging.getLogger(__name__)


def split_pretraining(train: ImageSet, pretrain_fraction: float, seed: int):
    """Split ``train`` into (clean pretraining set, set to finetune on), seeded."""
    order = np.random.default_rng([seed, 5]).permutation(len(train))
    n_pretrain = int(round(pretrain_fraction * len(train)))
    pretrain = train.subset(np.sort(order[:n_pretrain]))
    finetune = train.subset(np.sort(order[n_pretrain:]))
    log.info(
        "reserved %d clean pretraining images; %d left to finetune on", len(pretrain), len(finetune)
    )
    return pretrain, finetune
