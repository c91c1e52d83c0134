"""One interface for every defence that produces a finetuned (or repaired) model.

A defence is a function ``run(task, settings) -> Outcome`` registered under a name with
``@register_defence``.  Its settings come from the ``baselines.<name>`` parameter block
into a settings class (``config.settings``: a frozen dataclass whose fields all have
defaults, validated on construction for types, ranges and unknown keys); the parameter
schema (schema.py) validates it before any node starts.  ``needs`` says which
optional inputs of the ``Task`` it reads: ``undefended`` (post-training defences repair
the undefended model) or ``trusted`` (a small clean set).  The baselines pipeline builds
one node per name listed in ``baselines.methods``; a new method is one module plus its
decorator (and an import in ``defences/__init__.py``).

``Task.finetune`` is the one way every method trains: a copy of a starting model through
``engine.fit`` with the run's recipe, evaluated for CA and ASR each epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from ieu_potion.attacks.poison import AttackConfig
from ieu_potion.config import Natural, Share, settings, settings_from_params
from ieu_potion.data.imageset import ImageSet
from ieu_potion.results import RunKey
from ieu_potion.training.engine import History, Objective, TrainConfig, fit
from ieu_potion.training.setup import evaluator, view_maker
from ieu_potion.training.views import ViewMaker

NEEDS = ("undefended", "trusted")


@dataclass(frozen=True)
class Task:
    """What a defence is given: the starting weights, the (possibly poisoned) finetuning
    set, the test sets it is scored on, the finetuning recipe (the run's seed already
    added) and the attack's target class; ``undefended`` and ``trusted`` where the
    defence asked for them."""

    backbone: nn.Module
    train: ImageSet
    clean_test: ImageSet
    triggered_test: ImageSet
    recipe: TrainConfig
    target_class: int
    undefended: nn.Module | None = None
    trusted: ImageSet | None = None

    @classmethod
    def of_run(
        cls,
        backbone: nn.Module,
        train: ImageSet,
        clean_test: ImageSet,
        triggered_test: ImageSet,
        finetune_params: dict[str, Any],
        attack: dict[str, Any],
        key: RunKey,
        **optional: Any,
    ) -> Task:
        """The task of one run from its node inputs: the recipe with the run's seed."""
        recipe = key.replicate(TrainConfig.from_params(finetune_params))
        target = AttackConfig.from_params(attack).target_class
        return cls(backbone, train, clean_test, triggered_test, recipe, target, **optional)

    def views(self, model: nn.Module, config: TrainConfig | None = None) -> ViewMaker:
        return view_maker(model, config or self.recipe)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """CA, ASR and poison healed of ``model`` on the task's test sets."""
        return evaluator(
            self.clean_test, self.triggered_test, self.target_class, self.views(model)
        )(model)

    def finetune(
        self,
        objective: Objective,
        name: str,
        data: ImageSet | None = None,
        start: nn.Module | None = None,
        **changes: Any,
    ) -> tuple[nn.Module, History]:
        """Train a copy of ``start`` (default: the backbone) on ``data`` (default: the
        finetuning set) with ``objective`` and the recipe (``changes`` replace recipe
        fields: epochs, lr, ...), evaluating CA and ASR each epoch."""
        model = copy.deepcopy(self.backbone if start is None else start)
        config = dataclasses.replace(self.recipe, **changes) if changes else self.recipe
        views = self.views(model, config)
        history = fit(
            model,
            self.train if data is None else data,
            objective,
            config,
            views,
            evaluator(self.clean_test, self.triggered_test, self.target_class, views),
            name=name,
        )
        return model, history


@dataclass
class Outcome:
    """What a defence returns: the defended model (None for a test-time defence, which
    wraps the undefended one), a per-epoch (or per-round) history and the final metrics
    (CA, ASR, healed and whatever the method measures besides)."""

    model: nn.Module | None
    history: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Defence:
    name: str
    run: Callable[[Task, Any], Outcome]
    settings: Any  # a settings class (config.settings), every field with a default
    needs: tuple[str, ...]
    makes_model: bool

    def configure(self, params: dict[str, Any] | None) -> Any:
        """The method's settings from its ``baselines.<name>`` block (None: defaults)."""
        return settings_from_params(self.settings, params or {}, f"baselines.{self.name}")


DEFENCES: dict[str, Defence] = {}


def register_defence(
    name: str, settings: Any, needs: tuple[str, ...] = (), makes_model: bool = True
):
    """Register ``run(task, settings) -> Outcome`` as the defence ``name``."""
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise ValueError(f"unknown defence inputs {unknown}; valid: {', '.join(NEEDS)}")

    def decorate(run: Callable[[Task, Any], Outcome]):
        if name in DEFENCES:
            raise ValueError(f"defence {name!r} is registered twice")
        DEFENCES[name] = Defence(name, run, settings, tuple(needs), makes_model)
        return run

    return decorate


@settings
class TrustedSettings:
    """``baselines.trusted``: the trusted clean set, ``fraction`` of the finetuning set's
    size, drawn with ``seed`` from the clean pretraining split."""

    fraction: Share = 0.05  # of the finetuning set's size
    seed: Natural = 0  # which samples are drawn


def trusted_settings(baselines: dict[str, Any]) -> TrustedSettings:
    return settings_from_params(
        TrustedSettings, baselines.get("trusted") or {}, "baselines.trusted"
    )


def listed_methods(baselines: dict[str, Any]) -> list[str]:
    """``baselines.methods`` (default ``[none]``; the schema checks the names)."""
    return list(baselines.get("methods", ["none"]))


def get_defence(name: str) -> Defence:
    if name not in DEFENCES:
        raise ValueError(f"unknown defence {name!r}; valid: {', '.join(sorted(DEFENCES))}")
    return DEFENCES[name]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Measures the peak memory a block adds, in MiB, into the yielded dict's
    ``peak_memory_mb``: CUDA's allocator peak on a GPU; on the CPU the process's resident
    set sampled every 5 ms (Linux), minus its size at the start."""
    found: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield found
        torch.cuda.synchronize(device)
        found["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    try:
        start = _rss_bytes()
    except OSError:  # no /proc: not measured
        yield found
        return
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], _rss_bytes())
        found["peak_memory_mb"] = (peak[0] - start) / 2**20


def run_defence(defence: Defence, task: Task, settings: Any) -> Outcome:
    """``defence`` on ``task``, its wall time and peak memory added to the metrics."""
    for need in defence.needs:
        if getattr(task, need) is None:
            raise ValueError(f"defence {defence.name!r} needs the task's {need!r} input")
    start = time.perf_counter()
    with peak_memory(task.recipe.torch_device()) as memory:
        outcome = defence.run(task, settings)
    outcome.metrics.setdefault("seconds", time.perf_counter() - start)
    outcome.metrics.update(memory)
    return outcome
