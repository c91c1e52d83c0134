"""Potion and its baselines on one poisoned model, for each discovered subset S_f.

Methods: ``none`` (the poisoned model), ``eu`` (re-finetune from the same starting weights
on D minus S_f with the original recipe), ``ssd`` (SSD dampening over a fixed alpha grid),
and ``ssd_ptn``, ``lf_ptn``, ``xlf_ptn`` (the importance named, alpha chosen by PTN).

Discovery comes in two modes: ``benchmark`` uses the nested ground-truth shares drawn by
data_poisoning; ``realistic`` uses the samples that IEU's gate flags above tau (its
confidences alone: no ground truth is read).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ieu_potion import kernels
from ieu_potion.data.imageset import ImageSet
from ieu_potion.results import REALISTIC, RunKey
from ieu_potion.training.engine import accuracy, clean_accuracy_and_asr
from ieu_potion.training.views import ViewMaker
from ieu_potion.unlearning.importance import flat_parameters, importances, load_flat_parameters
from ieu_potion.unlearning.ptn import PTNConfig, ptn_search

log = logging.getLogger(__name__)

METHODS = ("none", "eu", "ssd", "ssd_ptn", "lf_ptn", "xlf_ptn")
DISCOVERY_MODES = ("benchmark", "realistic")
RETAIN_SETS = ("full", "exact")


@dataclass(frozen=True)
class PotionConfig:
    methods: tuple[str, ...] = METHODS
    discovery: str = "benchmark"
    shares: tuple[str, ...] = ()  # subset keys to run; empty: all
    tau: float | None = None  # realistic mode: the gate threshold; None: the one IEU used
    ssd_alphas: tuple[float, ...] = (1.0, 10.0, 100.0)
    retain_set: str = "full"
    eu_shares: tuple[str, ...] = ()  # empty: every share
    # Shares whose PTN steps are also scored on the test sets (the trade-off curve).
    tradeoff_shares: tuple[str, ...] = ()
    importance_batch_size: int = 64
    ptn: PTNConfig = field(default_factory=PTNConfig)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PotionConfig:
        params = dict(params)
        params["ptn"] = PTNConfig.from_params(params.get("ptn") or {})
        for key in ("methods", "shares", "ssd_alphas", "eu_shares", "tradeoff_shares"):
            if key in params:
                params[key] = tuple(params[key])
        config = cls(**params)
        config.check()
        return config

    def check(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(f"unknown Potion methods {unknown}; valid: {', '.join(METHODS)}")
        if self.discovery not in DISCOVERY_MODES:
            raise ValueError(
                f"unknown discovery mode {self.discovery!r}; valid: {', '.join(DISCOVERY_MODES)}"
            )
        if self.retain_set not in RETAIN_SETS:
            raise ValueError(f"retain_set must be one of {', '.join(RETAIN_SETS)}")
        if self.tau is not None and not 0.0 < self.tau < 1.0:
            raise ValueError(f"tau must be null (IEU's own) or lie in (0, 1), got {self.tau}")
        if any(a <= 0 for a in self.ssd_alphas):
            raise ValueError(f"ssd_alphas must be > 0, got {list(self.ssd_alphas)}")
        if self.importance_batch_size < 1:
            raise ValueError("importance_batch_size must be >= 1")


def with_own_settings(potion: dict[str, Any], own: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shared ``potion`` block with a namespace's own entries over it (the paper's
    benchmark sets ``retain_set: exact`` for its namespace alone, say); a ``ptn`` entry is
    merged key by key."""
    merged = dict(potion)
    for name, value in (own or {}).items():
        merged[name] = {**(merged.get("ptn") or {}), **value} if name == "ptn" else value
    return merged


def realistic_discovery(confidence: np.ndarray, tau: float) -> dict[str, np.ndarray]:
    """S_f = the training samples the IEU gate is more than ``tau`` confident on."""
    flagged = np.flatnonzero(np.asarray(confidence) > tau)
    if len(flagged) == 0:
        raise ValueError(f"the IEU gate flags no training sample above tau {tau}")
    log.info("realistic discovery: the IEU gate flags %d samples", len(flagged))
    return {REALISTIC: flagged}


def select_shares(subsets: dict[str, np.ndarray], wanted: tuple[str, ...]):
    if not wanted:
        return subsets
    missing = sorted(set(wanted) - set(subsets))
    if missing:
        raise ValueError(
            f"discovery shares {missing} were not drawn; available: {', '.join(subsets)}"
        )
    return {k: subsets[k] for k in wanted}


class Evaluator:
    """Evaluates flat parameter vectors with one working copy of the model."""

    def __init__(
        self,
        model: nn.Module,
        views: ViewMaker,
        clean_test: ImageSet,
        triggered_test: ImageSet,
        target_class: int,
    ) -> None:
        self.work = copy.deepcopy(model).eval()
        self.views = views
        self.clean_test, self.triggered_test = clean_test, triggered_test
        self.target_class = target_class

    def metrics(self, theta: torch.Tensor) -> dict[str, float]:
        load_flat_parameters(self.work, theta)
        return clean_accuracy_and_asr(
            self.work, self.clean_test, self.triggered_test, self.target_class, self.views
        )

    def accuracy(self, theta: torch.Tensor, data: ImageSet) -> float:
        """Accuracy w.r.t. the training (possibly poisoned) labels."""
        load_flat_parameters(self.work, theta)
        return accuracy(self.work, data, self.views, data.labels)


def tradeoff(
    theta0: torch.Tensor,
    imp_forget: torch.Tensor,
    imp_retain: torch.Tensor,
    alphas: pd.Series,
    evaluator: Evaluator,
    config: PotionConfig,
) -> pd.DataFrame:
    """Clean accuracy and ASR of the model dampened at each alpha a PTN search visited,
    for the trade-off curve (``parallel`` candidates per batched dampening call)."""
    rows = []
    for start in range(0, len(alphas), config.ptn.parallel):
        batch = torch.tensor(
            alphas.iloc[start : start + config.ptn.parallel].to_numpy(),
            dtype=imp_forget.dtype,
            device=imp_forget.device,
        )
        thetas = kernels.dampen(theta0, imp_forget, imp_retain, batch, config.ptn.lam)
        for theta in thetas:
            metrics = evaluator.metrics(theta)
            rows.append({k: metrics[k] for k in ("clean_accuracy", "attack_success_rate")})
    log.info("trade-off curve: %d PTN steps scored on the test sets", len(rows))
    return pd.DataFrame(rows, index=alphas.index)


def run_potion(
    model: nn.Module,
    train: ImageSet,
    subsets: dict[str, np.ndarray],
    evaluator: Evaluator,
    views: ViewMaker,
    config: PotionConfig,
    retrain: Callable[[ImageSet], dict[str, float]] | None,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every configured method on every subset: (metric records, PTN trace table).

    A record holds ``share``, ``method`` and the metrics, including ``model_damage`` (clean
    accuracy change in points) and ``seconds``.  ``retrain(retain_set)`` runs EU; ``seed``
    draws the augmentations the importances are computed on.
    """
    theta0 = flat_parameters(model)
    before = evaluator.metrics(theta0)
    log.info(
        "poisoned model: CA %.4f, ASR %.4f, healed %.4f",
        before["clean_accuracy"],
        before["attack_success_rate"],
        before["poison_healed"],
    )
    kinds = {m.removesuffix("_ptn") for m in config.methods if m.endswith("_ptn")}
    if "ssd" in config.methods:
        kinds.add("ssd")
    retain_cache: dict[str, torch.Tensor] = {}
    records: list[dict[str, Any]] = []
    traces = []

    def record(share, method, metrics, seconds, **extra):
        damage = 100.0 * (metrics["clean_accuracy"] - before["clean_accuracy"])
        records.append(
            {
                "share": share,
                "method": method,
                **metrics,
                "model_damage": damage,
                "seconds": seconds,
                **extra,
            }
        )

    def importance(kind: str, data: ImageSet) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        value = importances(model, data, kind, views, config.importance_batch_size, seed)
        return value, time.perf_counter() - start

    for share, indices in subsets.items():
        forget = train.subset(indices)
        keep = np.ones(len(train), dtype=bool)
        keep[indices] = False
        retain = train.subset(np.flatnonzero(keep))
        log.info("share %s: %d discovered, %d retained", share, len(forget), len(retain))
        if "none" in config.methods:
            record(share, "none", before, 0.0)
        imp_f, imp_r, imp_seconds = {}, {}, {}
        for kind in sorted(kinds):
            imp_f[kind], t_f = importance(kind, forget)
            if config.retain_set == "full":
                if kind not in retain_cache:
                    retain_cache[kind], t_r = importance(kind, train)
                    log.info("%s retain importance on the full training set: %.1f s", kind, t_r)
                imp_r[kind] = retain_cache[kind]
                imp_seconds[kind] = t_f
            else:
                imp_r[kind], t_r = importance(kind, retain)
                imp_seconds[kind] = t_f + t_r
        if "ssd" in config.methods:
            for alpha in config.ssd_alphas:
                start = time.perf_counter()
                theta = kernels.dampen(theta0, imp_f["ssd"], imp_r["ssd"], alpha, config.ptn.lam)
                seconds = imp_seconds["ssd"] + time.perf_counter() - start
                record(
                    share, f"ssd_alpha_{alpha:g}", evaluator.metrics(theta), seconds, alpha=alpha
                )
        for method in config.methods:
            if not method.endswith("_ptn"):
                continue
            kind = method.removesuffix("_ptn")
            start = time.perf_counter()
            result = ptn_search(
                theta0,
                imp_f[kind],
                imp_r[kind],
                lambda theta, data=forget: evaluator.accuracy(theta, data),
                len(forget),
                len(retain),
                config.ptn,
            )
            search = time.perf_counter() - start
            trace = pd.DataFrame(result.trace).assign(share=share, method=method)
            if share in config.tradeoff_shares:
                trace = trace.join(
                    tradeoff(theta0, imp_f[kind], imp_r[kind], trace.alpha, evaluator, config)
                )
            traces.append(trace)
            record(
                share,
                method,
                evaluator.metrics(result.parameters),
                imp_seconds[kind] + search,
                alpha=result.alpha,
                ptn_steps=result.steps,
                ptn_converged=float(result.converged),
                ptn_last_percentile=trace.percentile.iloc[-1] if len(trace) else math.nan,
                ptn_last_dampened_share=trace.dampened_share.iloc[-1] if len(trace) else math.nan,
                search_seconds=search,
                importance_seconds=imp_seconds[kind],
            )
        if (
            "eu" in config.methods
            and retrain is not None
            and (not config.eu_shares or share in config.eu_shares)
        ):
            start = time.perf_counter()
            metrics = retrain(retain)
            record(share, "eu", metrics, time.perf_counter() - start)
    trace = pd.concat(traces, ignore_index=True) if traces else pd.DataFrame()
    return records, trace


def records_to_rows(records: list[dict[str, Any]], key: RunKey) -> pd.DataFrame:
    frames = []
    for rec in records:
        metrics = {k: v for k, v in rec.items() if k not in ("share", "method")}
        frames.append(key.rows(rec["method"], metrics, discovery_share=rec["share"]))
    return pd.concat(frames, ignore_index=True)
