"""The undefended finetune ("none"): what every defence is compared with."""

from __future__ import annotations

from ieu_potion.config import settings
from ieu_potion.defences.registry import Outcome, Task, register_defence
from ieu_potion.results import final_metrics
from ieu_potion.training.engine import CrossEntropy


@settings
class NoSettings:
    """``baselines.none``: no settings."""


@register_defence("none", NoSettings)
def undefended(task: Task, settings: NoSettings) -> Outcome:
    """No defence: plain cross-entropy on the recipe's views (``finetune.views``)."""
    model, history = task.finetune(CrossEntropy(task.recipe.views), "none")
    table = history.table()
    return Outcome(model, table, final_metrics(table, history.seconds))
