"""IEU: Interleaved Ensemble Unlearning (docs/methods.md), torch only, registered as the
multi-stage defence ``ieu`` (``defences/registry.py``).

Stage 1 (``train_gate``) trains the shallow poisoned module (the gate) with plain
cross-entropy on the unaugmented view; it is ``engine.fit`` with
``CrossEntropy(("plain",))``.  ``gate_threshold`` reads the kept gate's confidences on the
training set and sets the threshold (``threshold.py`` with ``tau: auto``).  Stage 2
(``finetune_ieu``) is ``IEUObjective`` plugged into the same engine through
``Task.finetune``: the frozen gate decides per sample whether the robust module learns it
(masked-logit cross-entropy) or queues it for unlearning by gradient ascent at the
dynamic rate.

Ground-truth poison flags are used only to score the gate, never to decide anything.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from torch import nn

from ieu_potion import kernels
from ieu_potion.config import Count, Natural, NonNegative, Positive, settings, settings_from_params
from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.registry import Outcome, Stage, Task, register_defence
from ieu_potion.defences.threshold import (
    Split,
    agreement,
    choose_epoch,
    otsu_split,
    text_histogram,
)
from ieu_potion.results import final_metrics
from ieu_potion.training import distributed
from ieu_potion.training.engine import (
    Batch,
    CrossEntropy,
    StepInfo,
    TrainConfig,
    fit,
    guarded_step,
    make_optimizer,
    predict,
)
from ieu_potion.training.engine import set_hyperparameters as set_optimizer_hyperparameters
from ieu_potion.training.setup import make_gate, view_maker
from ieu_potion.training.views import ViewMaker

log = logging.getLogger(__name__)

RATE_FLOOR = 0.2
RATE_CEILING = 6.0
GATE_EPOCHS = ("consensus", "last", "separation")


@settings
class IEUConfig:
    """``ieu.defence``: the gate threshold and how stage 2 unlearns."""

    # a number in (0, 1), the paper's fixed threshold, or "auto": chosen from the gate's
    # confidences after stage 1 (threshold.py)
    tau: Literal["auto"] | Annotated[float, Strict(), Field(gt=0, lt=1)] = "auto"
    # consensus: the usable stage-1 epoch whose flags agree best with the other usable
    # epochs'; separation: the best separated one; last: the paper's
    gate_epoch: Literal[GATE_EPOCHS] = "consensus"
    # tau auto: the least separation (Fisher's ratio) a cut needs to be used; below it
    # nothing is flagged (docs/ieu.md: mostly below 20 without a learned backdoor)
    min_separation: NonNegative = 15.0
    # tau auto: the least contrast a cut needs too, its separation over that of the best
    # cut within the unflagged group (threshold.py; docs/ieu.md: mostly 0.6-1.8 without
    # a learned backdoor, mostly 2.2 or more with one)
    min_contrast: NonNegative = 2.0
    gate_depth: Count = 1  # transformer blocks the gate keeps
    queue_capacity: Natural = 0  # 0: the batch size
    # "dynamic", or a constant scale s (ablation: 1, 2, 4)
    unlearning_rate: Literal["dynamic"] | Positive = "dynamic"
    # rate multiplier after a skipped unlearning step
    nonfinite_shrink: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.5

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> IEUConfig:
        return settings_from_params(cls, params, "ieu.defence")


def dynamic_scale(previous_loss: float | None, num_classes: int) -> float:
    """s = 1 for the first unlearning step, then max(6 - exp(l_prev / sqrt 2) / C, 0.2)."""
    if previous_loss is None:
        return 1.0
    exponent = min(previous_loss / math.sqrt(2.0), 700.0)  # exp overflows past ~709
    return max(RATE_CEILING - math.exp(exponent) / num_classes, RATE_FLOOR)


class UnlearnQueue:
    """FIFO of flagged samples (their views and labels), emptied at every epoch start.

    Each sample carries its place in the training order (step, then position in the
    batch).  Under torchrun every rank queues the flagged samples of its own shard, and
    ``due`` takes the decision of all ranks together: an unlearning step is due when the
    ranks' queues hold ``capacity`` samples between them, and it takes the ``capacity``
    oldest of them, the same samples a single process would take."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[tuple[int, int, torch.Tensor, torch.Tensor]] = deque()
        self.total_queued = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(
        self, indices: np.ndarray, views: torch.Tensor, labels: torch.Tensor, order: np.ndarray
    ) -> None:
        """``views`` (n, V, 3, h, w): every view of each of the n samples; ``order`` (n,)
        their places in the training order, increasing."""
        for i, index in enumerate(indices):
            self._items.append((int(order[i]), int(index), views[i], labels[i]))
        self.total_queued += len(indices)

    def due(self) -> int | None:
        """How many of this rank's samples the next unlearning step takes, or None while
        the queues hold fewer than ``capacity`` samples in all."""
        if distributed.world().size == 1:
            return self.capacity if len(self) >= self.capacity else None
        if distributed.all_sum([len(self)])[0] < self.capacity:
            return None
        mine = np.array([order for order, _, _, _ in self._items], dtype=np.int64)
        everyone = distributed.all_gather(mine)
        last = np.partition(everyone, self.capacity - 1)[self.capacity - 1]
        return int((mine <= last).sum())

    def pop(self, count: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The oldest ``count`` samples: indices, views (n, V, ...), labels."""
        if count > len(self):
            raise RuntimeError(f"queue holds {len(self)} samples, {count} asked for")
        items = [self._items.popleft() for _ in range(count)]
        indices = np.array([i for _, i, _, _ in items], dtype=np.int64)
        if not items:
            return indices, torch.empty(0), torch.empty(0, dtype=torch.int64)
        return (
            indices,
            torch.stack([v for _, _, v, _ in items]),
            torch.stack([y for *_, y in items]),
        )

    def clear(self) -> None:
        self._items.clear()


# a batch's place in the training order: step * ORDER_STRIDE + position in the batch
ORDER_STRIDE = 1 << 32


class IEUObjective:
    """Stage 2: masked-logit CE on the clean and corrupted views, interleaved unlearning."""

    views = ("plain", "clean", "corrupted")

    def __init__(
        self,
        gate: nn.Module,
        gate_views: ViewMaker,
        config: IEUConfig,
        tau: float,
        num_classes: int,
        batch_size: int,
        clip: float,
        poisoned: np.ndarray,
        device: torch.device,
    ) -> None:
        self.gate = gate.to(device).eval()
        self.gate_views = gate_views  # the gate sees its own input size and normalisation
        for p in self.gate.parameters():
            p.requires_grad_(False)
        self.config = config
        self.tau = tau  # the configured value, or the one chosen after stage 1
        self.num_classes = num_classes
        self.clip = clip
        self.capacity = config.queue_capacity or batch_size
        self.poisoned = poisoned  # scoring only
        self.device = device
        self.queue = UnlearnQueue(self.capacity)
        self.unlearn_optimizer: torch.optim.Optimizer | None = None
        self.previous_loss: float | None = None
        self.shrink = 1.0
        self.total_steps = 0
        self.total_skipped = 0
        self.last_rate = math.nan
        self._flagged: torch.Tensor | None = None

    def start_epoch(self, epoch: int) -> None:
        self.queue.clear()
        self.queued_before = self.queue.total_queued
        self.steps_before = self.total_steps
        self.skipped_before = self.total_skipped
        self.seen: list[np.ndarray] = []
        self.flagged_seen: list[np.ndarray] = []

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor | None:
        with torch.no_grad():
            gate_input = self.gate_views(batch.images, ("plain",), torch.Generator())["plain"]
            gate_logits = self.gate(gate_input)
        logits = model(torch.cat([batch.views["clean"], batch.views["corrupted"]]))
        loss, _, flagged = kernels.masked_cross_entropy(
            gate_logits, logits, batch.labels, self.tau, views=2
        )
        self._flagged = flagged
        # a batch the gate flags entirely has nothing to learn from: no step at all (an
        # optimizer step on a zero loss would still apply weight decay)
        return None if bool(flagged.all()) else loss

    def after_step(self, model: nn.Module, batch: Batch, info: StepInfo) -> None:
        # loss() did not see an empty shard (torchrun, a batch smaller than the ranks)
        flagged = self._flagged.cpu().numpy() if len(batch.indices) else np.zeros(0, bool)
        self.seen.append(batch.indices)
        self.flagged_seen.append(flagged)
        if flagged.any():
            rows = torch.from_numpy(flagged).to(batch.labels.device)
            views = torch.stack([batch.views[v][rows] for v in self.views], dim=1)
            order = info.step * ORDER_STRIDE + batch.offset + np.flatnonzero(flagged)
            self.queue.push(batch.indices[flagged], views, batch.labels[rows], order)
        count = self.queue.due()
        if count is not None:
            self.unlearn(model, info, count)

    def unlearning_scale(self) -> float:
        if self.config.unlearning_rate == "dynamic":
            return dynamic_scale(self.previous_loss, self.num_classes)
        return float(self.config.unlearning_rate)

    def unlearn(self, model: nn.Module, info: StepInfo, count: int) -> None:
        """One gradient-ascent step on the oldest queued samples, with its own AdamW;
        ``count`` of them are this rank's (all of them in a single process)."""
        if self.unlearn_optimizer is None:
            self.unlearn_optimizer = make_optimizer(model, self.device)
        _, views, labels = self.queue.pop(count)
        rate = info.lr * self.unlearning_scale() * self.shrink
        set_optimizer_hyperparameters(self.unlearn_optimizer, rate, info.weight_decay)
        loss = None
        if count:
            n_views = views.shape[1]
            inputs = views.transpose(0, 1).reshape(-1, *views.shape[2:])
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
            ):
                loss = F.cross_entropy(model(inputs).float(), labels.repeat(n_views))
        done = guarded_step(
            loss,
            model,
            self.unlearn_optimizer,
            self.clip,
            ascent=True,
            share=count / self.capacity,
        )
        distributed.average_buffers(model)  # only the ranks with samples moved them
        why = done.skipped
        if why is None:
            self.previous_loss = done.loss
            self.total_steps += 1
            self.last_rate = rate
            log.debug(
                "unlearning step %d: loss %.4f, rate %.3g",
                self.total_steps,
                self.previous_loss,
                rate,
            )
        else:
            self.total_skipped += 1
            self.shrink *= self.config.nonfinite_shrink
            log.warning(
                "unlearning step skipped (%s); rate scale now %.3g (%d skipped)",
                why,
                self.shrink,
                self.total_skipped,
            )

    def end_epoch(self, epoch: int) -> dict[str, float]:
        seen = np.concatenate(self.seen)
        flagged = np.concatenate(self.flagged_seen)
        counts = gate_counts(flagged, self.poisoned[seen])
        queued = self.queue.total_queued - self.queued_before
        *counts, queued = distributed.all_sum([*counts, queued])  # every rank's shards
        record = scores_from_counts(*counts)
        record.update(
            samples_queued=int(queued),
            unlearning_steps=self.total_steps - self.steps_before,
            unlearning_skipped=self.total_skipped - self.skipped_before,
            last_unlearning_rate=self.last_rate,
        )
        log.info(
            "IEU epoch %d: flagged %d of %d samples (precision %.3f, recall %.3f), "
            "%d unlearning steps",
            epoch + 1,
            record["gate_flagged"],
            int(counts[2] + counts[3]),
            record["gate_precision"],
            record["gate_recall"],
            record["unlearning_steps"],
        )
        return record


def gate_counts(flagged: np.ndarray, poisoned: np.ndarray) -> list[int]:
    """True and false positives, poisoned and clean samples: what ``gate_scores`` needs,
    in a form that adds up over ranks."""
    flagged, poisoned = flagged.astype(bool), poisoned.astype(bool)
    tp, fp = int((flagged & poisoned).sum()), int((flagged & ~poisoned).sum())
    return [tp, fp, int(poisoned.sum()), int((~poisoned).sum())]


def scores_from_counts(tp: float, fp: float, poisoned: float, clean: float) -> dict[str, float]:
    flagged = int(tp + fp)
    return {
        "gate_precision": tp / max(1, flagged),
        "gate_recall": tp / max(1, int(poisoned)),
        "gate_fpr": fp / max(1, int(clean)),
        "gate_flagged": flagged,
    }


def gate_scores(flagged: np.ndarray, poisoned: np.ndarray) -> dict[str, float]:
    """Precision, recall (TPR) and FPR of the flags against the ground truth."""
    return scores_from_counts(*gate_counts(flagged, poisoned))


def confidence(logits: np.ndarray) -> np.ndarray:
    """Max softmax probability per row of logits."""
    return torch.from_numpy(logits).float().softmax(-1).max(-1).values.numpy()


@settings
class IEUSettings:
    """``ieu``: the gate threshold and how stage 2 unlearns (``defence``), and stage 1's
    training recipe (``gate_training``; the run's seed is added to its seed)."""

    defence: IEUConfig
    gate_training: TrainConfig


def usable(config: IEUConfig, split: Split | None) -> Split | None:
    """``split`` where it separates by at least ``min_separation`` and stands out from the
    unflagged group by at least ``min_contrast``; else None (the confidences show no
    confident minority: no learned trigger to gate)."""
    if split is None:
        return None
    if split.separation < config.min_separation or split.contrast < config.min_contrast:
        return None
    return split


def stage_two_tau(config: IEUConfig, split: Split | None) -> float:
    """The configured tau, or with ``tau: auto`` the cut's; 1 (nothing flagged) where the
    confidences allow no cut."""
    if config.tau != "auto":
        return float(config.tau)
    return split.tau if split else 1.0


def choose_tau(
    config: IEUConfig, confidence: np.ndarray, least: int
) -> tuple[Split | None, Split | None, float]:
    """The best cut of the gate's confidences (or None), that cut where it is usable, and
    the tau stage 2 would use: what ``train_gate`` records each epoch and
    ``gate_threshold`` decides with."""
    raw = otsu_split(confidence, least)
    split = usable(config, raw)
    return raw, split, stage_two_tau(config, split)


def min_flagged(config: IEUConfig, batch_size: int) -> int:
    """The fewest flagged samples ``tau: auto`` accepts: one unlearning batch (the queue
    capacity, by default the finetuning batch size), since fewer flags per epoch never
    trigger an unlearning step."""
    return config.queue_capacity or batch_size


def gate_confidences(gate: nn.Module, train: ImageSet) -> dict[str, np.ndarray]:
    """The gate's confidence on every training sample, with the ground truth beside it."""
    return {
        "confidence": confidence(predict(gate, train, view_maker(gate))),
        "poisoned": train.poisoned,
        "labels": train.labels,
    }


@dataclass(frozen=True)
class GateEpoch:
    """The stage-1 epoch ``gate_epoch`` keeps (1-based), whether its cut is usable, and per
    epoch with a usable cut its ``agreement`` (threshold.py)."""

    epoch: int
    usable: bool
    agreement: dict[int, float]


def keep_gate_epoch(config: IEUConfig, confidences: Sequence[np.ndarray], least: int) -> GateEpoch:
    """Which epoch's gate stage 2 uses, from the gate's confidences on the training set
    after each epoch (no ground truth): ``last``, or among the epochs whose cut is usable
    the best agreeing (``consensus``) or best separated (``separation``); the last epoch
    where none is usable."""
    cuts: dict[int, Split] = {}
    flags: dict[int, np.ndarray] = {}  # as stage 2 would flag with that epoch's gate
    for epoch, conf in enumerate(confidences, start=1):
        _, split, tau = choose_tau(config, conf, least)
        if split:
            cuts[epoch], flags[epoch] = split, conf > tau
    agreements = agreement(flags)
    last = len(confidences)
    if config.gate_epoch == "last" or not cuts:
        return GateEpoch(last, last in cuts, agreements)
    separations = {epoch: split.separation for epoch, split in cuts.items()}
    return GateEpoch(choose_epoch(config.gate_epoch, separations, agreements), True, agreements)


def train_gate(
    task: Task, settings: IEUSettings
) -> tuple[nn.Module, pd.DataFrame, dict[str, np.ndarray]]:
    """Stage 1: the shallow poisoned module, plain CE on the unaugmented view, from the
    task's gate backbone (or its backbone) cut to ``gate_depth`` blocks.

    After each epoch the gate's confidences on the training set are split as ``tau: auto``
    would split them (no ground truth); the history records the separation, that tau, the
    flags' precision/recall against the ground truth (scoring only) and, for the epochs
    with a usable cut, their agreement; ``keep_gate_epoch`` chooses the gate stage 2
    freezes.  The third output holds every epoch's confidences (``confidence``, epochs x
    samples) with the poison flags, from which ``scripts/gate_sensitivity.py`` replays the
    choice under other settings."""
    config = settings.defence
    training = task.replicate(settings.gate_training)
    least = min_flagged(config, task.recipe.batch_size)
    start = task.backbone if task.gate_backbone is None else task.gate_backbone
    gate = make_gate(
        start, task.models.gate, config.gate_depth, training.seed, task.train.num_classes
    )
    confidences: list[np.ndarray] = []
    states: list[dict[str, torch.Tensor]] = []

    def evaluate(g: nn.Module) -> dict[str, float]:
        conf = gate_confidences(g, task.train)["confidence"]
        confidences.append(conf)
        states.append({k: v.detach().clone() for k, v in g.state_dict().items()})
        raw, _, tau = choose_tau(config, conf, least)
        return {
            "separation": raw.separation if raw else math.nan,
            "contrast": raw.contrast if raw else math.nan,
            "gate_tau": tau,
            **gate_scores(conf > tau, task.train.poisoned),
        }

    history = fit(
        gate,
        task.train,
        CrossEntropy(("plain",)),
        training,
        view_maker(gate, training),
        evaluate=evaluate,
        name="gate",
    )
    table = history.table()
    kept = keep_gate_epoch(config, confidences, least)
    if not kept.usable and config.gate_epoch != "last":
        log.warning(
            "gate: no epoch left a confident minority of >= %d samples separated by "
            ">= %g at a contrast >= %g; keeping the last",
            least,
            config.min_separation,
            config.min_contrast,
        )
    gate.load_state_dict(states[kept.epoch - 1])
    table["agreement"] = table.epoch.map(kept.agreement).astype(float)
    table["kept"] = table.epoch == kept.epoch
    log.info(
        "gate: kept epoch %d of %d (gate_epoch %s, separation %.3g, contrast %.3g, agreement %.3g)",
        kept.epoch,
        len(table),
        config.gate_epoch,
        table.separation.iloc[kept.epoch - 1],
        table.contrast.iloc[kept.epoch - 1],
        table.agreement.iloc[kept.epoch - 1],
    )
    epochs = {"confidence": np.stack(confidences), "poisoned": task.train.poisoned}
    return gate, table, epochs


def gate_threshold(
    task: Task, settings: IEUSettings, ieu_gate: nn.Module
) -> tuple[dict[str, np.ndarray]]:
    """The kept gate's confidences on the training set with the threshold stage 2 uses
    (``tau``): the configured value, or with ``tau: auto`` the Otsu cut of these
    confidences.  Where no cut leaves a confident minority, tau is 1 (nothing flagged: IEU
    becomes plain finetuning) and a warning says so."""
    config = settings.defence
    arrays = gate_confidences(ieu_gate, task.train)
    conf = arrays["confidence"]
    raw, split, tau = choose_tau(config, conf, min_flagged(config, task.recipe.batch_size))
    if config.tau == "auto":
        if split is None:
            log.warning(
                "tau auto: the gate's confidences show no confident minority (best cut's "
                "separation %.3g and contrast %.3g, against min_separation %g and "
                "min_contrast %g); nothing is flagged and IEU's stage 2 is plain finetuning",
                raw.separation if raw else math.nan,
                raw.contrast if raw else math.nan,
                config.min_separation,
                config.min_contrast,
            )
        else:
            log.info(
                "tau auto: %.4f (separation %.3g, contrast %.3g, %d of %d samples flagged, %.1f%%)",
                tau,
                split.separation,
                split.contrast,
                split.flagged,
                split.total,
                100 * split.share,
            )
    log.info("gate confidences, tau in the starred bin: %s", text_histogram(conf, tau))
    return ({**arrays, "tau": np.array(tau)},)


@register_defence(
    "ieu",
    IEUSettings,
    needs=("models",),
    block="ieu",
    stages=(
        Stage("train_gate", train_gate, outputs=("ieu_gate", "gate_history", "gate_epochs")),
        Stage("gate_threshold", gate_threshold, outputs=("gate_confidence",), inputs=("ieu_gate",)),
    ),
    inputs=("ieu_gate", "gate_confidence"),
)
def finetune_ieu(
    task: Task,
    settings: IEUSettings,
    ieu_gate: nn.Module,
    gate_confidence: dict[str, np.ndarray],
) -> Outcome:
    """Stage 2: the robust module learns what the gate lets through and unlearns the rest;
    the gate flags confidences above ``gate_confidence["tau"]``."""
    config = task.recipe
    tau = float(gate_confidence["tau"])
    objective = IEUObjective(
        ieu_gate,
        view_maker(ieu_gate),
        settings.defence,
        tau,
        task.train.num_classes,
        config.batch_size,
        config.clip,
        task.train.poisoned,
        config.torch_device(),
    )
    model, history = task.finetune(objective, "ieu")
    table = history.table()
    return Outcome(model, table, {**final_metrics(table, history.seconds), "gate_tau": tau})
