"""The one training engine: pretraining, the undefended finetune, IEU (and later ABL and
retraining) are objectives plugged into ``fit``.

``fit`` owns what every method shares: seeded batching, the views, AdamW with a warmup +
cosine learning rate and a cosine weight-decay schedule on >1-D weights, per-tensor
gradient clipping, bf16 autocast on CUDA, the fused optimizer, the guard that never
applies a non-finite loss or gradient, per-epoch evaluation and progress.  An objective
says which views it needs, computes the loss, and may act after each step (IEU's
unlearning) or at epoch boundaries.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import pandas as pd
import torch
from pydantic import Field, Strict, field_validator, model_validator
from torch import nn
from tqdm.auto import tqdm

from ieu_potion.config import (
    Count,
    Natural,
    NonNegative,
    Positive,
    Text,
    settings,
    settings_from_params,
)
from ieu_potion.data.imageset import ImageSet
from ieu_potion.training import distributed
from ieu_potion.training.views import VIEWS, ViewMaker

log = logging.getLogger(__name__)


OPTIMIZERS = ("adamw", "sgd")


@settings
class TrainConfig:
    """A training recipe (``finetune``, ``ieu.gate_training``, ``model.pretrain.train``)."""

    epochs: Count
    batch_size: Count  # samples per optimizer step
    lr: Annotated[float, Strict(), Field(gt=0, le=1)]  # peak, already scaled for the batch
    min_lr: NonNegative = 1e-6  # where the cosine ends
    warmup_epochs: NonNegative = 1.0  # linear warmup, in epochs (fractions allowed)
    schedule: Literal["cosine", "constant"] = "cosine"  # constant: after the warmup
    # cosine from the first to the second; one number: constant
    weight_decay: tuple[NonNegative, NonNegative] = (0.04, 0.1)
    clip: Positive = 3.0  # per-tensor gradient norm
    seed: Natural = 0  # batch order and augmentations (the run's seed is added)
    optimizer: Literal[OPTIMIZERS] = "adamw"  # sgd: Nesterov momentum (ABL's unlearning)
    momentum: Annotated[float, Strict(), Field(ge=0, lt=1)] = 0.9  # sgd only
    device: Text = "auto"  # auto: CUDA when present, else the CPU; or a torch device
    augment: dict[str, Any] = field(default_factory=dict)  # ViewMaker fields

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "auto":
            try:
                torch.device(value)
            except RuntimeError:
                raise ValueError(
                    f"{value!r} is no torch device: auto, cpu, cuda, cuda:<n>, mps, ..."
                ) from None
        return value

    @field_validator("weight_decay", mode="before")
    @classmethod
    def _one_or_two(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})"
            )
        valid = {f.name for f in fields(ViewMaker)} - {"size", "mean", "std"}
        unknown = sorted(set(self.augment) - valid)
        if unknown:
            raise ValueError(
                f"unknown augment settings {unknown}; valid: {', '.join(sorted(valid))}"
            )
        augment = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
        ViewMaker(size=(1024, 1024), mean=(0, 0, 0), std=(1, 1, 1), **augment)
        object.__setattr__(self, "augment", augment)
        return self

    @model_validator(mode="before")
    @classmethod
    def _base_lr(cls, params: Any) -> Any:
        """``base_lr`` (per 256 samples, as in the papers) may stand in for ``lr``."""
        if isinstance(params, dict) and "base_lr" in params:
            params = dict(params)
            base_lr = params.pop("base_lr")
            if "lr" in params:
                raise ValueError("give lr or base_lr, not both")
            batch = params.get("batch_size")
            if isinstance(base_lr, int | float) and isinstance(batch, int):
                params["lr"] = base_lr * batch / 256
            else:
                raise ValueError(f"base_lr must be a number, got {base_lr!r}")
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str = "train") -> TrainConfig:
        return settings_from_params(cls, params, where)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@settings
class FinetuneConfig(TrainConfig):
    """``finetune`` (a namespace's ``<namespace>.finetune`` entries over it: that attack's
    training regime): the recipe of the undefended model, which EU's retraining and ABL's
    training on the rest repeat and whose schedule IEU's stage 2 follows, with the views
    the undefended model is trained on (IEU's stage 2 chooses its own)."""

    # IEU's paper: clean and corrupted crops; the Potion benchmark: the clean crop alone
    views: Annotated[tuple[Literal[VIEWS], ...], Field(min_length=1)] = ("clean", "corrupted")


class Schedule:
    """Learning rate and weight decay as functions of the global step."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.config = config
        self.total = config.epochs * steps_per_epoch
        self.warmup = int(round(config.warmup_epochs * steps_per_epoch))

    def progress(self, step: int) -> float:
        return min(1.0, max(0, step - self.warmup) / max(1, self.total - self.warmup - 1))

    def lr(self, step: int) -> float:
        c = self.config
        if step < self.warmup:
            return c.lr * (step + 1) / self.warmup
        if c.schedule == "constant":
            return c.lr
        return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * self.progress(step)))

    def weight_decay(self, step: int) -> float:
        start, end = self.config.weight_decay
        return end + 0.5 * (start - end) * (1 + math.cos(math.pi * step / max(1, self.total)))


def make_optimizer(
    model: nn.Module, device: torch.device, kind: str = "adamw", momentum: float = 0.9
) -> torch.optim.Optimizer:
    """AdamW (or SGD with Nesterov momentum) with weight decay on >1-D weights only (the
    schedule sets lr and decay)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "decay": True}, {"params": other, "decay": False}]
    if kind == "sgd":
        return torch.optim.SGD(
            groups, lr=0.0, momentum=momentum, nesterov=momentum > 0, weight_decay=0.0
        )
    # the fused kernel on the CPU and CUDA: a quarter of the per-tensor loop's time on the
    # CPU (docs/benchmarks.md), equal to it up to float rounding
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(groups, lr=0.0, weight_decay=0.0, fused=fused)


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float):
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay if group["decay"] else 0.0


@dataclass(frozen=True)
class Step:
    """What ``guarded_step`` did: ``skipped`` is None when the step was applied, else the
    reason; ``loss`` is the batch's loss (over every rank's shard), NaN when skipped."""

    skipped: str | None
    loss: float = math.nan


def guarded_step(
    loss: torch.Tensor | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    clip: float,
    ascent: bool = False,
    share: float = 1.0,
) -> Step:
    """Backpropagate ``loss`` (its negative for ascent), clip each tensor's gradient to
    ``clip`` and step.  Nothing is applied (not even weight decay), and the reason is
    returned, when there is no loss (the objective had no sample to learn from), a
    non-finite loss, no parameter with a gradient, or a non-finite gradient.

    Under torchrun ``loss`` is this rank's shard mean and ``share`` the shard's part of
    the batch: the weighted gradients are summed over the ranks, and every decision is
    taken by all ranks together (``training.distributed``)."""
    optimizer.zero_grad(set_to_none=True)
    present = loss is not None
    finite = present and bool(torch.isfinite(loss.detach()))
    learns = mine = finite and loss.requires_grad  # mine: this rank backpropagates
    value = float(loss.detach()) * share if finite else 0.0
    if distributed.world().size > 1:  # the decisions of all ranks together
        counts = distributed.all_sum([present, present and not finite, learns, value])
        present, finite, learns, value = counts[0] > 0, counts[1] == 0, counts[2] > 0, counts[3]
    if not present:
        return Step("no sample to learn from")
    if not finite:
        return Step("non-finite loss")
    if not learns:
        return Step("no parameter gets a gradient")
    if mine:
        scaled = loss * share if share != 1.0 else loss
        (-scaled if ascent else scaled).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    distributed.reduce_gradients(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return Step("no parameter gets a gradient")
    norms = torch.stack(torch._foreach_norm(grads))
    if not torch.isfinite(norms).all():
        optimizer.zero_grad(set_to_none=True)
        return Step("non-finite gradient")
    scale = (clip / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(scale.unbind()))
    optimizer.step()
    return Step(None, value)


@dataclass
class Batch:
    """The samples of one step that this rank trains on: the whole batch, or under
    torchrun this rank's shard, whose first sample is at ``offset`` in the batch."""

    indices: np.ndarray
    images: torch.Tensor  # uint8 (B, H, W, 3) on the device
    labels: torch.Tensor  # training labels (B,)
    views: dict[str, torch.Tensor]
    offset: int = 0


@dataclass
class StepInfo:
    epoch: int
    step: int
    lr: float
    weight_decay: float
    skipped: int = 0


class Objective(Protocol):
    """What ``fit`` trains for.  ``loss`` is a mean over the batch's samples, so that
    under torchrun each rank can take a shard (an objective whose loss is not, sets
    ``shardable = False``); it is not called for an empty shard, but ``after_step`` is,
    on every rank."""

    views: tuple[str, ...]

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor | None:
        """The batch's loss, or None when no sample of it is to be learned from."""

    def start_epoch(self, epoch: int) -> None: ...

    def after_step(self, model: nn.Module, batch: Batch, info: StepInfo) -> None: ...

    def end_epoch(self, epoch: int) -> dict[str, float]: ...


class CrossEntropy:
    """Plain cross-entropy on the given views (pretraining, gate stage 1, undefended)."""

    def __init__(self, views: tuple[str, ...]) -> None:
        self.views = tuple(views)

    def loss(self, model, batch):
        logits = model(torch.cat([batch.views[v] for v in self.views]))
        return nn.functional.cross_entropy(logits.float(), batch.labels.repeat(len(self.views)))

    def start_epoch(self, epoch):
        pass

    def after_step(self, model, batch, info):
        pass

    def end_epoch(self, epoch):
        return {}


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.epochs)


def seed_everything(seed: int) -> None:
    """Seed every global generator a model's construction or training may draw from
    (Python's, NumPy's legacy one, torch's on every device); call it right before use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms on CUDA (cuBLAS workspace, no cuDNN autotuning, torch's
    deterministic kernels); the CPU path is deterministic anyway.  docs/reproducibility.md
    says what it costs."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Boundaries of an epoch's batches: ``batch_size`` each, the remainder last; a
    remainder of one sample joins the batch before it (BatchNorm cannot train on one)."""
    starts = list(range(0, n, batch_size)) + [n]
    if len(starts) > 2 and n - starts[-2] == 1:
        del starts[-2]
    return starts


def fit(
    model: nn.Module,
    data: ImageSet,
    objective: Objective,
    config: TrainConfig,
    views: ViewMaker,
    evaluate=None,
    name: str = "training",
) -> History:
    """Train ``model`` in place on ``data``; ``evaluate(model) -> dict`` runs each epoch."""
    if len(data) == 0:
        raise ValueError(f"{name}: the training set is empty")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{name}: the model has no trainable parameter")
    world = distributed.world()
    device = config.torch_device()
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU
    seed_everything(config.seed)
    model.to(device).train()
    optimizer = make_optimizer(model, device, config.optimizer, config.momentum)
    starts = batch_starts(len(data), config.batch_size)
    steps_per_epoch = len(starts) - 1
    # an objective whose loss is no mean over samples (ABL's isolation) sees whole
    # batches on every rank; each rank then carries 1/size of the gradient
    shardable = getattr(objective, "shardable", True)
    if world.size > 1:
        distributed.broadcast_state(model)
    schedule = Schedule(config, steps_per_epoch)
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    history = History()
    start = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        objective.start_epoch(epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(data))
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        losses, skipped = [], 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{name} epoch {epoch + 1}/{config.epochs}",
            leave=False,
            disable=None,
        )
        for b in bar:
            idx = order[starts[b] : starts[b + 1]]
            batch_images = images[idx].to(device)
            # every rank draws the whole batch's views (the same random numbers as one
            # process), then keeps its shard
            batch_views = views(batch_images, objective.views, generator, data.stamp_for(idx))
            mine = world.shard(len(idx)) if shardable else slice(0, len(idx))
            share = (mine.stop - mine.start) / len(idx) if shardable else 1 / world.size
            batch = Batch(
                idx[mine],
                batch_images[mine],
                labels[idx[mine]].to(device),
                {view: tensor[mine] for view, tensor in batch_views.items()},
                offset=mine.start,
            )
            lr, wd = schedule.lr(step), schedule.weight_decay(step)
            set_hyperparameters(optimizer, lr, wd)
            with autocast(device):  # a rank's shard of a batch smaller than the ranks: empty
                loss = objective.loss(model, batch) if len(batch.indices) else None
            done = guarded_step(loss, model, optimizer, config.clip, share=share)
            distributed.average_buffers(model)
            if done.skipped is None:
                losses.append(done.loss)
            else:
                skipped += 1
                log.warning("%s: step %d skipped (%s)", name, step, done.skipped)
            objective.after_step(model, batch, StepInfo(epoch, step, lr, wd, skipped))
            step += 1
            if losses:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        history.skipped_steps += skipped
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "skipped_steps": skipped,
            "lr": lr,
        }
        record.update(objective.end_epoch(epoch))
        if evaluate is not None:
            record.update(evaluate(model))
            model.train()
        record["seconds"] = time.perf_counter() - start
        history.epochs.append(record)
        log.info("%s epoch %d/%d: %s", name, epoch + 1, config.epochs, format_record(record))
    history.seconds = time.perf_counter() - start
    model.eval()
    return history


def format_record(record: dict[str, Any]) -> str:
    """A history row as one log line's ``key=value`` list (floats to 4 significant digits;
    the epoch or round number, which the line already gives, left out)."""
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in record.items()
        if k not in ("epoch", "round")
    )


@torch.no_grad()
def predict(
    model: nn.Module,
    data: ImageSet,
    views: ViewMaker,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> np.ndarray:
    """Logits of ``model`` on the plain view of every image, as float32 (N, C)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    generator = torch.Generator()
    for start in range(0, len(data), batch_size):
        chunk = torch.from_numpy(data.images[start : start + batch_size]).to(device)
        with autocast(device):
            out.append(model(views(chunk, ("plain",), generator)["plain"]).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, data.num_classes), np.float32)


def accuracy(model: nn.Module, data: ImageSet, views: ViewMaker, labels: np.ndarray) -> float:
    """Share of ``data`` whose predicted class equals ``labels`` (true or training labels)."""
    return float((predict(model, data, views).argmax(1) == labels).mean())


def clean_accuracy_and_asr(
    model, clean_test: ImageSet, triggered_test: ImageSet, target_class: int, views: ViewMaker
) -> dict[str, float]:
    """CA on the clean test set; ASR = share of triggered non-target images predicted as
    the target class (the triggered set holds no target-class image)."""
    triggered_pred = predict(model, triggered_test, views).argmax(1)
    return {
        "clean_accuracy": accuracy(model, clean_test, views, clean_test.true_labels),
        "attack_success_rate": float((triggered_pred == target_class).mean()),
        "poison_healed": float((triggered_pred == triggered_test.true_labels).mean()),
    }
