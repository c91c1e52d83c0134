"""IEU: Interleaved Ensemble Unlearning (SPEC.md section 3), torch only.

Stage 1 trains the shallow poisoned module (the gate) with plain cross-entropy on the
unaugmented view; it is ``engine.fit`` with ``CrossEntropy(("plain",))``.  Stage 2 is
``IEUObjective`` plugged into the same engine: the frozen gate decides per sample whether
the robust module learns it (masked-logit cross-entropy) or queues it for unlearning by
gradient ascent at the dynamic rate.

Ground-truth poison flags are used only to score the gate, never to decide anything.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from torch import nn

from ieu_potion import kernels
from ieu_potion.config import Count, Natural, NonNegative, Positive, settings, settings_from_params
from ieu_potion.training.engine import Batch, StepInfo, guarded_step, make_optimizer
from ieu_potion.training.engine import set_hyperparameters as set_optimizer_hyperparameters
from ieu_potion.training.views import ViewMaker

log = logging.getLogger(__name__)

RATE_FLOOR = 0.2
RATE_CEILING = 6.0
GATE_EPOCHS = ("last", "separation")


@settings
class IEUConfig:
    """``ieu.defence``: the gate threshold and how stage 2 unlearns."""

    # a number in (0, 1), the paper's fixed threshold, or "auto": chosen from the gate's
    # confidences after stage 1 (threshold.py)
    tau: Literal["auto"] | Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.95
    gate_epoch: Literal[GATE_EPOCHS] = "last"  # separation: the stage-1 epoch that separates best
    # tau auto: the least separation (Fisher's ratio) a cut needs to be used; below it
    # nothing is flagged (docs/ieu.md: 6.2-13.6 measured without a learned backdoor)
    min_separation: NonNegative = 20.0
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
    """FIFO of flagged samples (their views and labels), emptied at every epoch start."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[tuple[int, torch.Tensor, torch.Tensor]] = deque()
        self.total_queued = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, indices: np.ndarray, views: torch.Tensor, labels: torch.Tensor) -> None:
        """``views`` (n, V, 3, h, w): every view of each of the n samples."""
        for i, index in enumerate(indices):
            self._items.append((int(index), views[i], labels[i]))
        self.total_queued += len(indices)

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def pop(self) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The oldest ``capacity`` samples: indices, views (n, V, ...), labels."""
        if not self.full():
            raise RuntimeError(f"queue holds {len(self)} of {self.capacity} samples")
        items = [self._items.popleft() for _ in range(self.capacity)]
        indices = np.array([i for i, _, _ in items])
        return indices, torch.stack([v for _, v, _ in items]), torch.stack([y for _, _, y in items])

    def clear(self) -> None:
        self._items.clear()


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
        flagged = self._flagged.cpu().numpy()
        self.seen.append(batch.indices)
        self.flagged_seen.append(flagged)
        if flagged.any():
            rows = torch.from_numpy(flagged).to(batch.labels.device)
            views = torch.stack([batch.views[v][rows] for v in self.views], dim=1)
            self.queue.push(batch.indices[flagged], views, batch.labels[rows])
        if self.queue.full():
            self.unlearn(model, info)

    def unlearning_scale(self) -> float:
        if self.config.unlearning_rate == "dynamic":
            return dynamic_scale(self.previous_loss, self.num_classes)
        return float(self.config.unlearning_rate)

    def unlearn(self, model: nn.Module, info: StepInfo) -> None:
        """One gradient-ascent step on the oldest queued samples, with its own AdamW."""
        if self.unlearn_optimizer is None:
            self.unlearn_optimizer = make_optimizer(model, self.device)
        _, views, labels = self.queue.pop()
        n_views = views.shape[1]
        inputs = views.transpose(0, 1).reshape(-1, *views.shape[2:])
        rate = info.lr * self.unlearning_scale() * self.shrink
        set_optimizer_hyperparameters(self.unlearn_optimizer, rate, info.weight_decay)
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        ):
            loss = F.cross_entropy(model(inputs).float(), labels.repeat(n_views))
        why = guarded_step(loss, model, self.unlearn_optimizer, self.clip, ascent=True)
        if why is None:
            self.previous_loss = float(loss.detach())
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
        record = gate_scores(flagged, self.poisoned[seen])
        record.update(
            samples_queued=self.queue.total_queued - self.queued_before,
            unlearning_steps=self.total_steps - self.steps_before,
            unlearning_skipped=self.total_skipped - self.skipped_before,
            last_unlearning_rate=self.last_rate,
        )
        log.info(
            "IEU epoch %d: flagged %d of %d samples (precision %.3f, recall %.3f), "
            "%d unlearning steps",
            epoch + 1,
            int(flagged.sum()),
            len(flagged),
            record["gate_precision"],
            record["gate_recall"],
            record["unlearning_steps"],
        )
        return record


def gate_scores(flagged: np.ndarray, poisoned: np.ndarray) -> dict[str, float]:
    """Precision, recall (TPR) and FPR of the flags against the ground truth."""
    flagged, poisoned = flagged.astype(bool), poisoned.astype(bool)
    tp = int((flagged & poisoned).sum())
    fp = int((flagged & ~poisoned).sum())
    return {
        "gate_precision": tp / max(1, int(flagged.sum())),
        "gate_recall": tp / max(1, int(poisoned.sum())),
        "gate_fpr": fp / max(1, int((~poisoned).sum())),
        "gate_flagged": int(flagged.sum()),
    }


def confidence(logits: np.ndarray) -> np.ndarray:
    """Max softmax probability per row of logits."""
    return torch.from_numpy(logits).float().softmax(-1).max(-1).values.numpy()
