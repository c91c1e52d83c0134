"""Potion and its baselines on one poisoned model, for each discovered subset S_f.

Methods: ``none`` (the poisoned model), ``eu`` (re-finetune from the same starting weights
on D minus S_f with the original recipe), ``ssd`` (SSD dampening over a fixed alpha grid),
and ``ssd_ptn``, ``lf_ptn``, ``xlf_ptn`` (the importance named, alpha chosen by PTN).

Each method is a function of one ``Share`` (``METHOD_RUNNERS``): the discovered subset,
its retain set and importances computed on first use, inside a ``PotionContext`` shared by
every share (the poisoned model's parameters and metrics, the evaluator, the whole-set
retain importances).

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
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import field_validator
from torch import nn

from ieu_potion import kernels
from ieu_potion.config import (
    Count,
    Natural,
    Positive,
    Text,
    distinct,
    settings,
    settings_from_params,
)
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


@settings
class PotionConfig:
    """``potion`` (a namespace's ``<namespace>.potion`` entries over it): which methods run
    on which discovered shares, and the PTN search."""

    methods: tuple[Literal[METHODS], ...] = METHODS  # which methods run, each once per share
    # benchmark: ground-truth shares; realistic: the samples IEU's gate flagged above the
    # threshold IEU used (ieu.defence.tau, the one source of the gate threshold)
    discovery: Literal[DISCOVERY_MODES] = "benchmark"
    shares: tuple[Text, ...] = ()  # subset keys to run; empty: all
    ssd_alphas: tuple[Positive, ...] = (1.0, 10.0, 100.0)  # plain SSD's fixed alpha grid
    # full: I_r once on the whole training set; exact: per share on D minus S_f
    retain_set: Literal[RETAIN_SETS] = "full"
    eu_shares: tuple[Text, ...] = ()  # empty: every share
    # Shares whose PTN steps are also scored on the test sets (the trade-off curve).
    tradeoff_shares: tuple[Text, ...] = ()
    # At most this many steps of each such search are scored, evenly spaced, the last one
    # always among them; 0: every step.
    tradeoff_points: Natural = 12
    importance_batch_size: Count = 64  # samples per importance batch
    ptn: PTNConfig = field(default_factory=PTNConfig)

    _distinct = field_validator("methods", "shares", "ssd_alphas", "eu_shares", "tradeoff_shares")(
        lambda cls, value: distinct(value)
    )

    @field_validator("methods")
    @classmethod
    def _some(cls, value: tuple) -> tuple:
        if not value:
            raise ValueError(f"name at least one method of {', '.join(METHODS)}")
        return value

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PotionConfig:
        return settings_from_params(cls, params, "potion")


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
    """Clean accuracy and ASR of the model dampened at the alphas a PTN search visited (at
    most ``tradeoff_points`` of them, evenly spaced and ending at the last), for the
    trade-off curve (``parallel`` candidates per batched dampening call)."""
    if 0 < config.tradeoff_points < len(alphas):
        picked = np.linspace(len(alphas) - 1, 0, config.tradeoff_points).round().astype(int)
        alphas = alphas.iloc[np.unique(picked)]
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


@dataclass
class PotionContext:
    """What every method on every share reads: the poisoned model's parameters and
    metrics, the evaluator, the views and configuration, and the retain importances of
    the whole training set (``retain_set: full``), computed once per kind."""

    model: nn.Module
    train: ImageSet
    evaluator: Evaluator
    views: ViewMaker
    config: PotionConfig
    retrain: Callable[[ImageSet], dict[str, float]] | None
    seed: int
    theta0: torch.Tensor = field(init=False)
    before: dict[str, float] = field(init=False)
    full_retain: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.theta0 = flat_parameters(self.model)
        self.before = self.evaluator.metrics(self.theta0)
        log.info(
            "poisoned model: CA %.4f, ASR %.4f, healed %.4f",
            self.before["clean_accuracy"],
            self.before["attack_success_rate"],
            self.before["poison_healed"],
        )

    def importance(self, kind: str, data: ImageSet) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        value = importances(
            self.model, data, kind, self.views, self.config.importance_batch_size, self.seed
        )
        return value, time.perf_counter() - start


@dataclass
class Share:
    """One discovered subset S_f: the forget and retain sets, their importances (computed
    on first use, once per kind) and the records and PTN traces of its methods."""

    context: PotionContext
    name: str
    forget: ImageSet
    retain: ImageSet
    records: list[dict[str, Any]] = field(default_factory=list)
    traces: list[pd.DataFrame] = field(default_factory=list)
    _importances: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)

    def importances(self, kind: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(I_f, I_r, seconds charged to this share) for ``kind``."""
        if kind not in self._importances:
            ctx = self.context
            imp_f, seconds = ctx.importance(kind, self.forget)
            if ctx.config.retain_set == "full":
                if kind not in ctx.full_retain:
                    ctx.full_retain[kind], t_r = ctx.importance(kind, ctx.train)
                    log.info("%s retain importance on the full training set: %.1f s", kind, t_r)
                imp_r = ctx.full_retain[kind]
            else:
                imp_r, t_r = ctx.importance(kind, self.retain)
                seconds += t_r
            self._importances[kind] = (imp_f, imp_r, seconds)
        return self._importances[kind]

    def record(self, method: str, metrics: dict[str, float], seconds: float, **extra) -> None:
        before = self.context.before["clean_accuracy"]
        self.records.append(
            {
                "share": self.name,
                "method": method,
                **metrics,
                "model_damage": 100.0 * (metrics["clean_accuracy"] - before),
                "seconds": seconds,
                **extra,
            }
        )


def run_none(share: Share) -> None:
    share.record("none", share.context.before, 0.0)


def run_ssd(share: Share) -> None:
    """SSD at each alpha of the fixed grid."""
    ctx = share.context
    imp_f, imp_r, imp_seconds = share.importances("ssd")
    for alpha in ctx.config.ssd_alphas:
        start = time.perf_counter()
        theta = kernels.dampen(ctx.theta0, imp_f, imp_r, alpha, ctx.config.ptn.lam)
        seconds = imp_seconds + time.perf_counter() - start
        share.record(f"ssd_alpha_{alpha:g}", ctx.evaluator.metrics(theta), seconds, alpha=alpha)


def run_ptn(share: Share, kind: str) -> None:
    """The ``kind`` importances dampened at the alpha PTN chooses."""
    ctx = share.context
    method = f"{kind}_ptn"
    imp_f, imp_r, imp_seconds = share.importances(kind)
    start = time.perf_counter()
    result = ptn_search(
        ctx.theta0,
        imp_f,
        imp_r,
        lambda theta: ctx.evaluator.accuracy(theta, share.forget),
        len(share.forget),
        len(share.retain),
        ctx.config.ptn,
    )
    search = time.perf_counter() - start
    trace = pd.DataFrame(result.trace).assign(share=share.name, method=method)
    if share.name in ctx.config.tradeoff_shares:
        trace = trace.join(
            tradeoff(ctx.theta0, imp_f, imp_r, trace.alpha, ctx.evaluator, ctx.config)
        )
    share.traces.append(trace)
    share.record(
        method,
        ctx.evaluator.metrics(result.parameters),
        imp_seconds + search,
        alpha=result.alpha,
        ptn_steps=result.steps,
        ptn_converged=float(result.converged),
        ptn_last_percentile=trace.percentile.iloc[-1] if len(trace) else math.nan,
        ptn_last_dampened_share=trace.dampened_share.iloc[-1] if len(trace) else math.nan,
        search_seconds=search,
        importance_seconds=imp_seconds,
    )


def run_eu(share: Share) -> None:
    """Re-finetuning on D minus S_f, on the shares ``eu_shares`` lists."""
    ctx = share.context
    if ctx.retrain is None or (ctx.config.eu_shares and share.name not in ctx.config.eu_shares):
        return
    start = time.perf_counter()
    metrics = ctx.retrain(share.retain)
    share.record("eu", metrics, time.perf_counter() - start)


# Each method of METHODS on one share, in the order its records are written.
METHOD_RUNNERS: dict[str, Callable[[Share], None]] = {
    "none": run_none,
    "ssd": run_ssd,
    "ssd_ptn": partial(run_ptn, kind="ssd"),
    "lf_ptn": partial(run_ptn, kind="lf"),
    "xlf_ptn": partial(run_ptn, kind="xlf"),
    "eu": run_eu,
}


def needs_retain_set(method: str, config: PotionConfig) -> bool:
    """Whether ``method`` reads D minus S_f: EU refinetunes on it; the dampening methods
    compute I_r on it under ``retain_set: exact``."""
    return method == "eu" or (method != "none" and config.retain_set == "exact")


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
    context = PotionContext(model, train, evaluator, views, config, retrain, seed)
    records: list[dict[str, Any]] = []
    traces: list[pd.DataFrame] = []
    for name, indices in subsets.items():
        keep = np.ones(len(train), dtype=bool)
        keep[indices] = False
        share = Share(context, name, train.subset(indices), train.subset(np.flatnonzero(keep)))
        log.info("share %s: %d discovered, %d retained", name, len(share.forget), len(share.retain))
        for method in METHOD_RUNNERS:
            if method not in config.methods:
                continue
            if len(share.retain) == 0 and needs_retain_set(method, config):
                log.warning(
                    "share %s: %s skipped: the discovered set holds every training sample, "
                    "so nothing is left to retain",
                    name,
                    method,
                )
                continue
            METHOD_RUNNERS[method](share)
        records += share.records
        traces += share.traces
    trace = pd.concat(traces, ignore_index=True) if traces else pd.DataFrame()
    return records, trace


def records_to_rows(records: list[dict[str, Any]], key: RunKey) -> pd.DataFrame:
    frames = []
    for rec in records:
        metrics = {k: v for k, v in rec.items() if k not in ("share", "method")}
        frames.append(key.rows(rec["method"], metrics, discovery_share=rec["share"]))
    return pd.concat(frames, ignore_index=True)
