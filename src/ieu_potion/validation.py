"""Parameter checks keyed by the parameter block's name, run before any node starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ieu_potion.attacks.poison import AttackConfig, check_shares
from ieu_potion.data.split import check_split


def _check_discovery(params: dict[str, Any]) -> None:
    check_shares(params["shares"])


PARAMETER_CHECKS: dict[str, Callable[[Any], Any]] = {
    "attack": AttackConfig.from_params,
    "discovery": _check_discovery,
    "data_split": check_split,
}
