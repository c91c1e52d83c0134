import math

import numpy as np
import pytest
import torch
from torch import nn

from ieu_potion.defences.ieu import (
    GateEpoch,
    IEUConfig,
    IEUObjective,
    UnlearnQueue,
    dynamic_scale,
    gate_scores,
    keep_gate_epoch,
)
from ieu_potion.defences.threshold import otsu_split
from ieu_potion.training.engine import Batch, StepInfo
from ieu_potion.training.views import ViewMaker
from tests.badinput import bad_input


@pytest.mark.parametrize(
    "previous, classes, expected",
    [
        (None, 10, 1.0),
        (0.0, 10, 6 - 1 / 10),
        (math.sqrt(2) * math.log(30), 10, 3.0),
        (math.sqrt(2) * math.log(5.8 * 10), 10, 0.2),
        (50.0, 10, 0.2),
        (1e6, 10, 0.2),
        (1.0, 100, 6 - math.exp(1 / math.sqrt(2)) / 100),
    ],
)
def test_dynamic_scale_matches_the_formula(previous, classes, expected):
    assert dynamic_scale(previous, classes) == pytest.approx(expected)


def push(queue, start, n):
    queue.push(
        np.arange(start, start + n),
        torch.arange(start, start + n).float()[:, None],
        torch.zeros(n, dtype=torch.long),
        np.arange(start, start + n),
    )


def test_queue_fills_flushes_fifo_at_capacity_and_clears():
    queue = UnlearnQueue(4)
    push(queue, 0, 3)
    assert queue.due() is None and len(queue) == 3
    with pytest.raises(RuntimeError, match="holds 3 samples, 4 asked for"):
        queue.pop(4)
    push(queue, 3, 3)
    assert queue.due() == 4
    indices, views, _ = queue.pop(4)
    assert indices.tolist() == [0, 1, 2, 3] and views[:, 0].tolist() == [0, 1, 2, 3]
    assert len(queue) == 2 and queue.total_queued == 6
    queue.clear()
    assert len(queue) == 0


class ConstantGate(nn.Module):
    """Flags the samples whose first pixel is positive, with confidence ~1."""

    def __init__(self, classes):
        super().__init__()
        self.classes = classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.zeros(len(x), self.classes)
        out[:, 1] = torch.where(x[:, 0, 0, 0] > 0, 30.0, 0.0)
        return out


def make_batch(indices, flagged_rows, classes=3):
    """The gate sees its own plain view of ``images``: a bright first pixel flags a row."""
    n = len(indices)
    views = {v: torch.randn(n, 3, 4, 4) for v in ("plain", "clean", "corrupted")}
    images = torch.zeros(n, 4, 4, 3, dtype=torch.uint8)
    images[flagged_rows, 0, 0, 0] = 255
    return Batch(np.asarray(indices), images, torch.randint(0, classes, (n,)), views)


def objective_and_model(capacity=4, poisoned=None):
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    poisoned = np.zeros(16, bool) if poisoned is None else poisoned
    gate_views = ViewMaker(size=(4, 4), mean=(0.5,) * 3, std=(0.5,) * 3)
    obj = IEUObjective(
        ConstantGate(3),
        gate_views,
        IEUConfig(tau=0.9, queue_capacity=capacity),
        0.9,
        3,
        batch_size=4,
        clip=3.0,
        poisoned=poisoned,
        device=torch.device("cpu"),
    )
    return obj, model


def test_flagged_samples_are_queued_and_unlearned_at_capacity():
    obj, model = objective_and_model()
    obj.start_epoch(0)
    info = StepInfo(epoch=0, step=0, lr=0.01, weight_decay=0.0)
    batch = make_batch([0, 1, 2, 3], flagged_rows=[0, 2])
    obj.loss(model, batch)
    obj.after_step(model, batch, info)
    assert len(obj.queue) == 2 and obj.total_steps == 0
    before = [p.detach().clone() for p in model.parameters()]
    batch = make_batch([4, 5, 6, 7], flagged_rows=[1, 3])
    obj.loss(model, batch)
    obj.after_step(model, batch, info)
    assert obj.total_steps == 1 and len(obj.queue) == 0
    assert obj.last_rate == pytest.approx(0.01 * 1.0), "the first unlearning step uses s = 1"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert obj.previous_loss is not None
    record = obj.end_epoch(0)
    assert record["samples_queued"] == 4 and record["unlearning_steps"] == 1


@bad_input(
    "the IEU gate flags every sample of a batch",
    "no robust-module step (no weight decay either), counted as skipped; the batch is queued",
)
def test_a_batch_the_gate_flags_entirely_gives_no_loss():
    obj, model = objective_and_model(capacity=8)
    obj.start_epoch(0)
    batch = make_batch([0, 1, 2, 3], flagged_rows=[0, 1, 2, 3])
    assert obj.loss(model, batch) is None
    obj.after_step(model, batch, StepInfo(0, 0, 0.01, 0.0))
    assert len(obj.queue) == 4
    assert obj.loss(model, make_batch([4, 5, 6, 7], flagged_rows=[1])) is not None


def test_queue_is_emptied_at_each_epoch_start():
    obj, model = objective_and_model(capacity=8)
    obj.start_epoch(0)
    batch = make_batch([0, 1, 2, 3], flagged_rows=[0, 1, 2])
    obj.loss(model, batch)
    obj.after_step(model, batch, StepInfo(0, 0, 0.01, 0.0))
    assert len(obj.queue) == 3
    obj.end_epoch(0)
    obj.start_epoch(1)
    assert len(obj.queue) == 0


def test_unlearning_ascends_the_loss_on_the_queued_samples():
    torch.manual_seed(0)
    obj, model = objective_and_model(capacity=4)
    obj.start_epoch(0)
    batch = make_batch([0, 1, 2, 3], flagged_rows=[0, 1, 2, 3])
    inputs = torch.cat([batch.views[v] for v in obj.views])
    labels = batch.labels.repeat(3)
    before = nn.functional.cross_entropy(model(inputs), labels).item()
    obj.loss(model, batch)
    obj.after_step(model, batch, StepInfo(0, 0, 0.05, 0.0))
    after = nn.functional.cross_entropy(model(inputs), labels).item()
    assert obj.total_steps == 1 and after > before


def test_non_finite_unlearning_loss_is_skipped_and_shrinks_the_rate():
    obj, model = objective_and_model(capacity=2)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    obj.start_epoch(0)
    before = [p.detach().clone() for p in model.parameters()]
    batch = make_batch([0, 1], flagged_rows=[0, 1])
    obj.loss(model, batch)
    obj.after_step(model, batch, StepInfo(0, 0, 0.01, 0.0))
    assert obj.total_skipped == 1 and obj.total_steps == 0 and obj.shrink == 0.5
    for a, b in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach(), equal_nan=True)


def test_gate_scores():
    flagged = np.array([1, 1, 0, 0, 1], bool)
    poisoned = np.array([1, 0, 1, 0, 1], bool)
    scores = gate_scores(flagged, poisoned)
    assert scores["gate_precision"] == pytest.approx(2 / 3)
    assert scores["gate_recall"] == pytest.approx(2 / 3)
    assert scores["gate_fpr"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"tau": 1.0}, "tau: Input should be 'auto' or less than 1, got 1.0"),
        ({"tau": "always"}, "tau: Input should be 'auto' or a valid number"),
        (
            {"gate_epoch": "best"},
            "gate_epoch: Input should be 'consensus', 'last' or 'separation', got 'best'",
        ),
        ({"gate_depth": 0}, "gate_depth: .* greater than or equal to 1, got 0"),
        (
            {"unlearning_rate": "fast"},
            "unlearning_rate: Input should be 'dynamic' or a valid number",
        ),
        ({"unlearning_rate": -1}, "unlearning_rate: .* or greater than 0, got -1"),
        ({"min_separation": -1}, "min_separation: .* greater than or equal to 0, got -1"),
        ({"min_contrast": -0.5}, "min_contrast: .* greater than or equal to 0, got -0.5"),
    ],
)
def test_bad_ieu_settings_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        IEUConfig.from_params(params)


def test_the_kept_gate_epoch_is_replayed_from_the_confidences_alone():
    """``keep_gate_epoch`` decides from each epoch's confidences: the last epoch where no
    cut is usable (or with ``last``), else the best agreeing usable epoch."""
    rng = np.random.default_rng(0)
    poisoned = np.arange(1000) >= 900

    def epoch(poison_at, tight_part=0):
        z = rng.normal(-1.0, 0.5, 1000)
        z[900:] = rng.normal(poison_at, 0.3, 100)
        z[1000 - tight_part :] = rng.normal(9.0, 0.05, tight_part)  # a tight part, surer
        return 1 / (1 + np.exp(-z))

    flat = [1 / (1 + np.exp(-rng.normal(0, 1, 1000))) for _ in range(3)]
    config = IEUConfig.from_params({"min_separation": 20.0})
    assert keep_gate_epoch(config, flat, 10) == GateEpoch(3, False, {})
    learnt = [flat[0], epoch(4.0), epoch(1.2, tight_part=33), epoch(4.0), flat[1]]
    kept = keep_gate_epoch(config, learnt, 10)
    assert kept.usable and kept.epoch in (2, 4) and set(kept.agreement) == {2, 3, 4}
    assert np.array_equal(
        learnt[kept.epoch - 1] > otsu_split(learnt[kept.epoch - 1], 10).tau, poisoned
    )
    by_separation = IEUConfig.from_params({"gate_epoch": "separation"})
    assert keep_gate_epoch(by_separation, learnt, 10).epoch == 3
    last = IEUConfig.from_params({"gate_epoch": "last"})
    assert keep_gate_epoch(last, learnt, 10) == GateEpoch(5, False, kept.agreement)
