"""One interface for every defence that produces a finetuned (or repaired) model.

A defence is a function ``run(task, settings) -> Outcome`` registered under a name with
``@register_defence``.  Its settings come from its parameter block (``baselines.<name>``
for the baselines pipeline's methods, ``ieu`` for IEU) into a settings class
(``config.settings``: a frozen dataclass validated on construction for types, ranges and
unknown keys); the parameter schema (schema.py) validates it before any node starts.
``needs`` says which optional inputs of the ``Task`` it reads: ``undefended``
(post-training defences repair the undefended model), ``trusted`` (a small clean set) or
``models`` (the run's model settings, for a defence that builds a model of its own).

A multi-stage defence also lists its earlier ``stages`` (IEU: the gate, then its
threshold): each is ``stage.run(task, settings, **inputs) -> tuple`` over the outputs of
the stages before it, and ``run`` reads the outputs it names in ``inputs``.
``run_defence`` runs them all in a row (scripts, benchmarks, tests); a pipeline makes one
node per stage (``run_stage``), so each stage's outputs are catalogued and a run resumes
between them.  The baselines pipeline builds one node per name listed in
``baselines.methods``; a new method is one module plus its decorator (and an import in
``defences/__init__.py``); docs/baselines.md.

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
from ieu_potion.config import Natural, Share, settings, settings_from_params, with_own_entries
from ieu_potion.data.imageset import ImageSet
from ieu_potion.results import RunKey
from ieu_potion.training.engine import FinetuneConfig, History, Objective, TrainConfig, fit
from ieu_potion.training.setup import ModelBlock, evaluator, view_maker
from ieu_potion.training.views import ViewMaker

NEEDS = ("undefended", "trusted", "models")


@dataclass(frozen=True)
class Task:
    """What a defence is given: the starting weights, the (possibly poisoned) finetuning
    set, the test sets it is scored on, the finetuning recipe (the run's seed already
    added) and the attack's target class; ``undefended``, ``trusted`` and ``models`` where
    the defence asked for them; ``gate_backbone``, a pretrained start for IEU's gate where
    the run pretrains one (``model.gate_pretrain``); ``seed``, the run's seed, which a
    defence adds to every seed its settings configure."""

    backbone: nn.Module
    train: ImageSet
    clean_test: ImageSet
    triggered_test: ImageSet
    recipe: FinetuneConfig
    target_class: int
    undefended: nn.Module | None = None
    trusted: ImageSet | None = None
    models: ModelBlock | None = None
    gate_backbone: nn.Module | None = None
    seed: int = 0

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
        own_recipe: dict[str, Any] | None = None,
        **optional: Any,
    ) -> Task:
        """The task of one run from its node inputs: the recipe (with the attack
        namespace's own entries ``own_recipe`` over it) with the run's seed."""
        where = f"{key.namespace}.finetune"
        recipe = with_own_entries(FinetuneConfig, finetune_params, own_recipe, where)
        recipe = key.replicate(recipe)
        target = AttackConfig.from_params(attack).target_class
        return cls(
            backbone, train, clean_test, triggered_test, recipe, target, **optional, seed=key.seed
        )

    def replicate(self, config: Any) -> Any:
        """``config`` (settings with a ``seed``) with the run's seed added to its own."""
        return dataclasses.replace(config, seed=config.seed + self.seed)

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
class Stage:
    """A step of a multi-stage defence before its last: ``run(task, settings, **inputs)``
    gets the outputs of earlier stages named in ``inputs`` and returns one value per name
    in ``outputs`` (a tuple).  The names are those of the datasets a pipeline catalogues
    them as, inside the attack namespace (IEU's ``ieu_gate``)."""

    name: str
    run: Callable[..., tuple]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Defence:
    name: str
    run: Callable[..., Outcome]  # (task, settings, **outputs of the stages named in inputs)
    settings: Any  # a settings class (config.settings)
    needs: tuple[str, ...]
    makes_model: bool
    block: str  # the parameter block its settings are read from
    stages: tuple[Stage, ...] = ()
    inputs: tuple[str, ...] = ()  # the stages' outputs that run reads

    @property
    def baseline(self) -> bool:
        """Whether the baselines pipeline runs it (its block is ``baselines.<name>``)."""
        return self.block == f"baselines.{self.name}"

    def configure(self, params: dict[str, Any] | None) -> Any:
        """The method's settings from its parameter block (None: defaults)."""
        return settings_from_params(self.settings, params or {}, self.block)

    def stage(self, name: str) -> Stage:
        found = {stage.name: stage for stage in self.stages}
        if name not in found:
            raise ValueError(
                f"defence {self.name!r} has no stage {name!r}; its stages: "
                f"{', '.join(found) or 'none'}"
            )
        return found[name]


DEFENCES: dict[str, Defence] = {}


def register_defence(
    name: str,
    settings: Any,
    needs: tuple[str, ...] = (),
    makes_model: bool = True,
    block: str | None = None,
    stages: tuple[Stage, ...] = (),
    inputs: tuple[str, ...] = (),
):
    """Register ``run(task, settings, **inputs) -> Outcome`` as the defence ``name``, its
    settings read from ``block`` (default ``baselines.<name>``: a method of the baselines
    pipeline, every setting with a default), after ``stages``."""
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise ValueError(f"unknown defence inputs {unknown}; valid: {', '.join(NEEDS)}")
    made: list[str] = []
    for stage in stages:
        missing = sorted(set(stage.inputs) - set(made))
        if missing:
            raise ValueError(
                f"stage {stage.name!r} of {name!r} reads {missing} before any makes it"
            )
        made += stage.outputs
    missing = sorted(set(inputs) - set(made))
    if missing:
        raise ValueError(f"defence {name!r} reads {missing}, which no stage makes")

    def decorate(run: Callable[..., Outcome]):
        if name in DEFENCES:
            raise ValueError(f"defence {name!r} is registered twice")
        DEFENCES[name] = Defence(
            name,
            run,
            settings,
            tuple(needs),
            makes_model,
            block or f"baselines.{name}",
            tuple(stages),
            tuple(inputs),
        )
        return run

    return decorate


@settings
class TrustedSettings:
    """``baselines.trusted``: the trusted clean set, ``fraction`` of the finetuning set's
    size, drawn with ``seed`` from the clean pretraining split."""

    fraction: Share = 0.05  # of the finetuning set's size
    seed: Natural = 0  # which samples are drawn


def trusted_settings(baselines: Any) -> TrustedSettings:
    """``baselines.trusted`` of the validated ``baselines`` block, or of a mapping."""
    trusted = baselines.get("trusted") if isinstance(baselines, dict) else baselines.trusted
    return settings_from_params(TrustedSettings, trusted, "baselines.trusted")


def listed_methods(baselines: dict[str, Any]) -> list[str]:
    """``baselines.methods`` (default ``[none]``; the schema checks the names)."""
    return list(baselines.get("methods", ["none"]))


def baseline_methods() -> list[str]:
    """The defences the baselines pipeline can run (``baselines.methods``)."""
    return [name for name, defence in DEFENCES.items() if defence.baseline]


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


def _check_needs(defence: Defence, task: Task) -> None:
    for need in defence.needs:
        if getattr(task, need) is None:
            raise ValueError(f"defence {defence.name!r} needs the task's {need!r} input")


def run_stage(defence: Defence, name: str, task: Task, settings: Any, **inputs: Any) -> tuple:
    """The stage ``name`` of ``defence`` alone (a pipeline node), on the outputs of the
    stages before it."""
    _check_needs(defence, task)
    stage = defence.stage(name)
    return stage.run(task, settings, **{n: inputs[n] for n in stage.inputs})


def run_defence(defence: Defence, task: Task, settings: Any, **done: Any) -> Outcome:
    """``defence`` on ``task``: each of its stages whose outputs are not in ``done`` (the
    outputs of stages a pipeline ran as nodes of their own), then its last step; the wall
    time and peak memory of what ran here are added to the metrics."""
    _check_needs(defence, task)
    start = time.perf_counter()
    with peak_memory(task.recipe.torch_device()) as memory:
        for stage in defence.stages:
            if not all(output in done for output in stage.outputs):
                made = stage.run(task, settings, **{n: done[n] for n in stage.inputs})
                done.update(zip(stage.outputs, made, strict=True))
        outcome = defence.run(task, settings, **{n: done[n] for n in defence.inputs})
    outcome.metrics.setdefault("seconds", time.perf_counter() - start)
    outcome.metrics.update(memory)
    return outcome
