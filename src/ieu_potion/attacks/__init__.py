"""Backdoor attacks: trigger functions behind one registry keyed by docs/methods.md's names."""

from ieu_potion.attacks.poison import (
    AttackConfig,
    discovery_subsets,
    poison_training_set,
    triggered_test_set,
)
from ieu_potion.attacks.triggers import TRIGGERS, Trigger, make_trigger

__all__ = [
    "TRIGGERS",
    "AttackConfig",
    "Trigger",
    "discovery_subsets",
    "make_trigger",
    "poison_training_set",
    "triggered_test_set",
]
