"""Poison a training set, trigger a test set, and draw discovery subsets.

``AttackConfig`` holds what one attack run needs (name, target class, how many samples,
seed, trigger settings); ``AttackConfig.from_params`` checks everything against the data
(class count, image size, available candidates) before any pixel is touched.
"""

from __future__ import annotations

import logging
import math
from dataclasses import field
from typing import Any, Literal

import numpy as np
from pydantic import field_validator, model_validator

from ieu_potion.attacks.stega import StegaCodec
from ieu_potion.attacks.triggers import TRIGGERS, Trigger, make_trigger
from ieu_potion.config import (
    Count,
    Fraction,
    Natural,
    Share,
    Text,
    settings,
    settings_from_params,
)
from ieu_potion.data.imageset import ImageSet, Overlay
from ieu_potion.results import ONE_SHOT

log = logging.getLogger(__name__)

DEFAULT_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@settings
class AttackConfig:
    """``<namespace>.attack``: which trigger, towards which class, on how many samples."""

    name: Text  # a registered trigger: docs/attacks.md, or your own (docs/tutorials)
    target_class: Natural = 1  # the label poisoned samples carry
    rate: Fraction | None = 0.1  # share of the finetuning set
    count: Count | None = None  # absolute number of poisoned samples
    target_share: Share | None = None  # clean-label only: share of the target class
    seed: Natural = 0  # which samples are poisoned (the run's seed is added)
    settings: dict[str, Any] = field(default_factory=dict)  # the trigger's (docs/attacks.md)
    # before | after the training augmentation; null: the attack's own (docs/attacks.md)
    stamp: Literal["before", "after"] | None = None

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        """Checked against the registry at validation time, not import time, so that an
        attack registered by a module of the user's own counts (docs/tutorials)."""
        if value not in TRIGGERS:
            valid = ", ".join(repr(n) for n in TRIGGERS)
            raise ValueError(f"unknown attack {value!r}; valid attacks: {valid}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AttackConfig:
        given = [v for v in (self.rate, self.count, self.target_share) if v is not None]
        if len(given) != 1:
            raise ValueError(
                f"attack {self.name!r}: give exactly one of rate, count and target_share"
            )
        if self.target_share is not None and not self.clean_label:
            raise ValueError(
                f"attack {self.name!r}: target_share applies to clean-label attacks "
                f"({', '.join(n for n, t in TRIGGERS.items() if t.clean_label)}) only; "
                "give rate or count"
            )
        # Trigger settings are checked by building the trigger on a nominal image size.
        trigger = make_trigger(self.name, (32, 32), self.seed, **self.settings)
        if self.stamp is None:
            object.__setattr__(self, "stamp", trigger.stamp)
        if self.stamp == "after" and not _blends(trigger):
            blends = (n for n in TRIGGERS if _blends(make_trigger(n, (32, 32), 0)))
            raise ValueError(
                f"attack {self.name!r} cannot be stamped after the augmentation: it is no "
                f"blend of the image (stamp 'after' works for {', '.join(blends)})"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_amount(cls, params: Any) -> Any:
        """Giving count or target_share unsets the default rate; null settings are none."""
        if isinstance(params, dict):
            params = dict(params)
            if params.get("count") is not None or params.get("target_share") is not None:
                params.setdefault("rate", None)
            if params.get("settings", {}) is None:
                params["settings"] = {}
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str = "attack") -> AttackConfig:
        return settings_from_params(cls, params, where)

    @property
    def clean_label(self) -> bool:
        return TRIGGERS[self.name].clean_label

    def trigger(self, image_size: tuple[int, int], codec: StegaCodec | None = None) -> Trigger:
        return make_trigger(self.name, image_size, self.seed, codec, **self.settings)

    def check_against(self, data: ImageSet) -> None:
        if self.target_class >= data.num_classes:
            raise ValueError(
                f"attack {self.name!r}: target_class {self.target_class} is not a class id of "
                f"this data set (0..{data.num_classes - 1})"
            )


def _poison_count(config: AttackConfig, n: int, candidates: int) -> int:
    if config.count is not None:
        return config.count
    if config.target_share is not None:
        return int(round(config.target_share * candidates))
    return int(round(config.rate * n))


def _blends(trigger: Trigger) -> bool:
    """Whether ``trigger`` is a blend of the image, fixed or drawn per image (so it can be
    stamped after the augmentation)."""
    return trigger.overlays(1, np.random.default_rng(0)) is not None


def poison_training_set(
    data: ImageSet, config: AttackConfig, codec: StegaCodec | None = None
) -> ImageSet:
    """Apply the trigger to a seeded choice of samples.

    Dirty-label attacks choose among non-target images and relabel them to the target;
    clean-label attacks choose among target-class images and keep every label.  The
    number poisoned is ``round(rate * len(data))``, ``count``, or ``round(target_share *
    target-class images)`` exactly.  Triggers that also transform the clean images (BATT's
    random rotations) do so on every image left unpoisoned.
    """
    config.check_against(data)
    is_target = data.true_labels == config.target_class
    candidates = np.flatnonzero(is_target if config.clean_label else ~is_target)
    wanted = _poison_count(config, len(data), len(candidates))
    if wanted > len(candidates):
        kind = "target-class" if config.clean_label else "non-target"
        raise ValueError(
            f"attack {config.name!r} asks for {wanted} poisoned samples but the training set "
            f"has only {len(candidates)} {kind} images; lower rate or count"
        )
    if wanted < 1:
        raise ValueError(f"attack {config.name!r}: rate {config.rate} poisons no sample")
    chosen = np.sort(np.random.default_rng([config.seed, 1]).choice(candidates, wanted, False))

    images = data.images.copy()
    trigger = config.trigger(data.image_size, codec)
    images[chosen] = trigger.apply(data.images[chosen], np.random.default_rng([config.seed, 2]))
    overlay = None
    if config.stamp == "after":  # the blends of the images above, with the same draws
        alpha, pattern = trigger.overlays(len(chosen), np.random.default_rng([config.seed, 2]))
        overlay = Overlay(alpha, pattern, data.images[chosen])
    clean = np.setdiff1d(np.arange(len(data)), chosen)
    transformed = trigger.transform_clean(images[clean], np.random.default_rng([config.seed, 5]))
    if transformed is not None:
        images[clean] = transformed
        log.info("%s: %d clean training images transformed too", config.name, len(clean))
    labels = data.labels.copy()
    if not config.clean_label:
        labels[chosen] = config.target_class
    poisoned = np.zeros(len(data), dtype=bool)
    poisoned[chosen] = True
    log.info(
        "%s: poisoned %d of %d training images (%s, target class %d, stamped %s the augmentation)",
        config.name,
        wanted,
        len(data),
        "clean-label" if config.clean_label else "dirty-label",
        config.target_class,
        config.stamp,
    )
    return ImageSet(
        images=images,
        labels=labels,
        true_labels=data.true_labels.copy(),
        poisoned=poisoned,
        attack=np.where(poisoned, config.name, data.attack),
        class_names=data.class_names,
        overlay=overlay,
    )


def triggered_test_set(
    data: ImageSet, config: AttackConfig, codec: StegaCodec | None = None
) -> ImageSet:
    """Every non-target test image with the trigger; true labels kept, flagged poisoned."""
    config.check_against(data)
    keep = np.flatnonzero(data.true_labels != config.target_class)
    images = config.trigger(data.image_size, codec).apply(
        data.images[keep], np.random.default_rng([config.seed, 3])
    )
    return ImageSet(
        images=images,
        labels=data.true_labels[keep].copy(),
        true_labels=data.true_labels[keep].copy(),
        poisoned=np.ones(len(keep), dtype=bool),
        attack=np.full(len(keep), config.name),
        class_names=data.class_names,
    )


def share_key(share: float) -> str:
    """The subset key of a discovery share: ``share_0.1``, ..., ``share_1``."""
    return f"share_{share:g}"


def discovery_subsets(data: ImageSet, shares, seed: int) -> dict[str, np.ndarray]:
    """Nested subsets of the poisoned samples' indices: each share contains the smaller.

    Keys are ``share_<s>`` for every share and ``one_shot`` (a single sample, the first of
    every share).  Indices refer to positions in ``data``.
    """
    shares = sorted(shares)
    poisoned = np.flatnonzero(data.poisoned)
    if len(poisoned) == 0:
        raise ValueError("the training set holds no poisoned sample to discover")
    order = np.random.default_rng([seed, 4]).permutation(poisoned)
    sizes = {s: max(1, math.ceil(round(s * len(order), 9))) for s in shares}
    subsets = {share_key(s): np.sort(order[:size]) for s, size in sizes.items()}
    subsets[ONE_SHOT] = order[:1]
    return subsets
