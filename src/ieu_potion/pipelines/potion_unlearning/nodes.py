"""potion_unlearning nodes: repair the undefended model given part of the poison."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from ieu_potion.config import with_own_entries
from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.registry import Task
from ieu_potion.reporting.tables import potion_table
from ieu_potion.results import RunKey
from ieu_potion.training.engine import CrossEntropy
from ieu_potion.unlearning.potion import (
    Evaluator,
    PotionConfig,
    realistic_discovery,
    records_to_rows,
    run_potion,
    select_shares,
)


def namespace_settings(potion: Any, own: dict[str, Any] | None = None, *, namespace: str):
    """The namespace's Potion settings: ``potion`` with ``<namespace>.potion`` over it.
    (Node arguments that take parameters are not annotated with settings classes: Kedro
    would instantiate those itself, a second validation beside the schema's.)"""
    return with_own_entries(PotionConfig, potion, own, f"{namespace}.potion")


def benchmark_subsets(subsets: dict[str, np.ndarray], potion: dict[str, Any]):
    return select_shares(subsets, PotionConfig.from_params(potion).shares)


def realistic_subsets(gate_confidence: dict[str, np.ndarray]):
    """Only the gate's confidences are read: never the ground-truth poison flags.  The
    threshold is the one IEU's stage 2 used (``ieu.defence.tau``, fixed or chosen)."""
    return realistic_discovery(gate_confidence["confidence"], float(gate_confidence["tau"]))


def unlearn_poison(
    poisoned_model: nn.Module,
    backbone: nn.Module,
    poisoned_train: ImageSet,
    subsets: dict[str, np.ndarray],
    clean_test: ImageSet,
    triggered_test: ImageSet,
    potion: dict[str, Any],
    finetune_params: dict[str, Any],
    attack: dict[str, Any],
    own_recipe: dict[str, Any] | None = None,
    *,
    key: RunKey,
):
    """Every configured method on every discovered subset: (results rows, PTN trace);
    ``own_recipe``: the namespace's own training regime (EU retrains with it)."""
    config = PotionConfig.from_params(potion)
    task = Task.of_run(
        backbone,
        poisoned_train,
        clean_test,
        triggered_test,
        finetune_params,
        attack,
        key,
        own_recipe,
    )
    views = task.views(poisoned_model)
    evaluator = Evaluator(poisoned_model, views, clean_test, triggered_test, task.target_class)

    def retrain(retain: ImageSet) -> dict[str, float]:
        _, history = task.finetune(CrossEntropy(task.recipe.views), "eu", data=retain)
        last = history.epochs[-1]
        return {k: last[k] for k in ("clean_accuracy", "attack_success_rate", "poison_healed")}

    records, trace = run_potion(
        poisoned_model, poisoned_train, subsets, evaluator, views, config, retrain, key.seed
    )
    return records_to_rows(records, key), trace


def summarise(results):
    """Table 1 analogue for this attack and seed: healed and damage over shares; one-shot
    and realistic discovery apart."""
    return potion_table(results)
