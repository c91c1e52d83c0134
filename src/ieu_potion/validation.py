"""Parameter checks keyed by the parameter block's name, run before any node starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ieu_potion.attacks.poison import AttackConfig, check_shares
from ieu_potion.attacks.stega import CodecConfig
from ieu_potion.data.split import check_split
from ieu_potion.defences.ieu import IEUConfig
from ieu_potion.defences.registry import check_baselines
from ieu_potion.models import ModelSpec
from ieu_potion.training.engine import TrainConfig
from ieu_potion.training.setup import check_weights
from ieu_potion.unlearning.potion import PotionConfig


def _check_discovery(params: dict[str, Any]) -> None:
    check_shares(params["shares"])


def _check_model(params: dict[str, Any]) -> None:
    for role in ("robust", "gate"):
        ModelSpec.from_params(params[role], num_classes=2)
    check_weights(params["weights"])
    TrainConfig.from_params(params["pretrain"]["train"])
    gate_pretrain = params.get("gate_pretrain")
    if gate_pretrain:
        depth = gate_pretrain.get("depth")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"gate_pretrain.depth must be an integer >= 1, got {depth!r}")
        TrainConfig.from_params(gate_pretrain["train"])


def _check_ieu(params: dict[str, Any]) -> None:
    IEUConfig.from_params(params["defence"])
    TrainConfig.from_params(params["gate_training"])


PARAMETER_CHECKS: dict[str, Callable[[Any], Any]] = {
    "attack": AttackConfig.from_params,
    "discovery": _check_discovery,
    "stega_codec": CodecConfig.from_params,
    "data_split": check_split,
    "model": _check_model,
    "ieu": _check_ieu,
    "finetune": TrainConfig.from_params,
    "potion": PotionConfig.from_params,
    "baselines": check_baselines,
}
