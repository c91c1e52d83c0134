"""ABL, I-BAU and AttnBlock pieces on hand-made inputs, and the defence registry."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ieu_potion.config import settings_from_params
from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.abl import isolate, isolation_loss, oracle_isolate
from ieu_potion.defences.attnblock import (
    AttnBlockSettings,
    attention_probabilities,
    blank_at_max,
    gradient_rollout,
    smooth,
)
from ieu_potion.defences.ibau import IBAUSettings, fixed_point_hypergradient, project, unlearn
from ieu_potion.defences.ieu import IEUSettings
from ieu_potion.defences.registry import (
    DEFENCES,
    Stage,
    Task,
    baseline_methods,
    get_defence,
    register_defence,
    run_defence,
    run_stage,
)
from ieu_potion.models import ModelSpec, build_model
from ieu_potion.training.engine import FinetuneConfig, batch_starts
from ieu_potion.training.setup import ModelBlock


@pytest.mark.parametrize("kind", ["lga", "flooding"])
def test_isolation_loss_pushes_the_loss_back_up_below_gamma(kind):
    for value, expected in ((0.9, 1.0), (0.2, -1.0)):
        loss = torch.tensor(value, requires_grad=True)
        isolation_loss(loss, kind, 0.5).backward()
        assert loss.grad.item() == pytest.approx(expected)
    above = isolation_loss(torch.tensor(0.9), kind, 0.5)
    assert above.item() == pytest.approx(0.9)


def test_isolation_takes_the_lowest_losses_and_at_least_one():
    losses = np.array([0.9, 0.05, 2.0, 0.01, 0.3, 0.02, 1.0, 0.7, 0.5, 0.4])
    assert isolate(losses, 0.3).tolist() == [1, 3, 5]
    assert isolate(losses, 0.01).tolist() == [3]


def test_a_single_sample_remainder_joins_the_batch_before_it():
    assert batch_starts(129, 64) == [0, 64, 129]
    assert batch_starts(130, 64) == [0, 64, 128, 130]
    assert batch_starts(1, 64) == [0, 1]
    assert batch_starts(64, 64) == [0, 64]


def test_hypergradient_matches_the_closed_form_on_a_quadratic():
    """inner: 0.5 ||d - A t||^2 (fixed point d* = A t); outer: 0.5 ||d - b||^2 + 0.5 ||t||^2;
    d outer(d*(t), t) / dt = A^T (A t - b) + t."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 3, generator=g)
    b = torch.randn(4, generator=g)
    theta = torch.randn(3, generator=g, requires_grad=True)
    fixed = (A @ theta).detach()
    grads = fixed_point_hypergradient(
        fixed,
        [theta],
        lambda d: 0.5 * (d - A @ theta).pow(2).sum(),
        lambda d: 0.5 * (d - b).pow(2).sum() + 0.5 * theta.pow(2).sum(),
        iterations=80,
        inner_lr=0.5,
    )
    expected = A.T @ (A @ theta - b) + theta
    torch.testing.assert_close(grads[0], expected.detach(), rtol=1e-5, atol=1e-6)


def test_hypergradient_matches_unrolled_differentiation_on_a_tiny_model():
    """At the inner fixed point, K fixed-point iterations equal differentiating through K
    unrolled inner steps that start from it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    params = list(model.parameters())
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    penalty, lr, steps = 2.0, 0.1, 30

    def inner(d):
        return -F.cross_entropy(model(x + d), y) + penalty * d.pow(2).sum()

    def outer(d):
        return F.cross_entropy(model(x + d), y)

    d = torch.zeros(1, 6, requires_grad=True)
    for _ in range(500):  # the contraction's fixed point
        (grad,) = torch.autograd.grad(inner(d), d)
        d = (d - lr * grad).detach().requires_grad_(True)
    implicit = fixed_point_hypergradient(d, params, inner, outer, steps, lr)
    unrolled = d.detach().requires_grad_(True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(inner(unrolled), unrolled, create_graph=True)
        unrolled = unrolled - lr * grad
    expected = torch.autograd.grad(outer(unrolled), params)
    for got, want in zip(implicit, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_projection_keeps_the_perturbation_inside_its_bound():
    delta = torch.full((1, 3, 4, 4), 5.0)
    project(delta, 0.2)
    assert float(delta.norm()) == pytest.approx(0.2 * math.sqrt(48))
    small = torch.full((1, 3, 4, 4), 0.01)
    project(small, 0.2)
    assert torch.equal(small, torch.full((1, 3, 4, 4), 0.01))
    unbounded = torch.full((1, 3, 4, 4), 5.0)
    project(unbounded, None)
    assert float(unbounded.max()) == 5.0


def test_ibau_rounds_respect_the_bound_and_record_each_round():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4)).eval()
    inputs, labels = torch.randn(40, 3, 4, 4), torch.randint(0, 4, (40,))
    settings = IBAUSettings(rounds=2, batch_size=16, max_rms=0.05, perturbation_lr=1000.0)
    before = [p.detach().clone() for p in model.parameters()]
    rows, delta = unlearn(model, inputs, labels, settings, lambda r, d: {"checked": r})
    assert [r["round"] for r in rows] == [1, 2] and [r["checked"] for r in rows] == [0, 1]
    assert all(r["perturbation_rms"] <= 0.05 + 1e-6 for r in rows)
    assert rows[-1]["perturbation_rms"] == pytest.approx(0.05, rel=1e-4)  # pushed to the edge
    assert float(delta.norm()) / math.sqrt(delta.numel()) <= 0.05 + 1e-6
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_attnblock_blanks_the_square_around_the_highest_relevance_only():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(2, 12, 12, 3), dtype=np.uint8)
    relevance = np.zeros((2, 12, 12), dtype=np.float32)
    relevance[0, 5, 7] = 1.0  # inside: a 4 px square at rows 3-6, columns 5-8
    relevance[1, 0, 11] = 1.0  # in a corner: shifted inside, rows 0-3, columns 8-11
    out = blank_at_max(images, relevance, 4)
    expected = images.copy()
    expected[0, 3:7, 5:9] = 0
    expected[1, 0:4, 8:12] = 0
    assert np.array_equal(out, expected)
    assert np.array_equal(images[0, 0, 0], out[0, 0, 0]) and images.min() > 0


def test_box_filter_spreads_a_spike_into_a_square():
    spike = torch.zeros(1, 9, 9)
    spike[0, 4, 4] = 9.0
    smoothed = smooth(spike, 3)
    assert torch.allclose(smoothed[0, 3:6, 3:6], torch.ones(3, 3))
    assert smoothed.sum() == pytest.approx(9.0)
    assert smooth(spike, 4).shape == spike.shape  # even sizes are made odd


def tiny_vit():
    torch.manual_seed(0)
    kwargs = {"patch_size": 4, "embed_dim": 24, "num_heads": 2, "depth": 2}
    return build_model(ModelSpec("vit_tiny_patch16_224", 4, kwargs, 16)).eval()


def test_rollout_gives_a_relevance_per_patch_and_restores_fused_attention():
    model = tiny_vit()
    fused = [b.attn.fused_attn for b in model.blocks]
    relevance = gradient_rollout(model, torch.randn(3, 3, 16, 16), 0.9)
    assert relevance.shape == (3, 4, 4) and (relevance >= 0).all() and relevance.sum() > 0
    assert [b.attn.fused_attn for b in model.blocks] == fused
    with attention_probabilities(model) as maps:
        model(torch.randn(1, 3, 16, 16))
    rows = maps[0].sum(-1)
    assert len(maps) == 2 and torch.allclose(rows, torch.ones_like(rows))


def tiny_task(model, size=16, **optional):
    rng = np.random.default_rng(1)

    def images(n):
        data = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        return ImageSet.clean(data, rng.integers(0, 4, n), list("abcd"))

    config = FinetuneConfig(epochs=1, batch_size=16, lr=1e-3)
    return Task(model, images(33), images(10), images(10), config, 1, model, images(20), **optional)


def test_attnblock_reports_itself_not_applicable_without_a_vit():
    model = build_model(ModelSpec("resnet10t", 4, {}, 16))
    defence = get_defence("attnblock")
    outcome = run_defence(defence, tiny_task(model), defence.configure(None))
    assert outcome.model is None and outcome.metrics["not_applicable"] == 1.0
    assert "clean_accuracy" not in outcome.metrics
    assert "no ViT" in outcome.history.reason[0]


@pytest.mark.parametrize("method", ["none", "abl", "ibau", "attnblock"])
def test_every_registered_defence_runs_on_a_tiny_vit(method):
    defence = get_defence(method)
    settings = defence.configure({"rounds": 1} if method == "ibau" else {})
    outcome = run_defence(defence, tiny_task(tiny_vit()), settings)
    assert 0 <= outcome.metrics["clean_accuracy"] <= 1
    assert 0 <= outcome.metrics["attack_success_rate"] <= 1
    assert outcome.metrics["seconds"] > 0 and "peak_memory_mb" in outcome.metrics
    assert (outcome.model is not None) == defence.makes_model
    if method == "abl":
        assert {"isolation_precision", "isolation_recall", "isolated"} <= set(outcome.metrics)
        assert list(outcome.history.phase.unique()) == ["isolation", "finetune", "unlearning"]


def test_abl_under_the_ieu_papers_protocol_unlearns_truly_poisoned_samples_with_adam(caplog):
    poisoned = np.zeros(200, dtype=bool)
    poisoned[[3, 50, 77, 120, 199]] = True
    drawn = oracle_isolate(poisoned, 0.01, seed=4)  # 2 of the 5
    assert len(drawn) == 2 and poisoned[drawn].all()
    assert (drawn == oracle_isolate(poisoned, 0.01, seed=4)).all(), "seeded"
    assert set(oracle_isolate(poisoned, 0.5, seed=4)) == {3, 50, 77, 120, 199}, "at most all"
    assert len(oracle_isolate(np.zeros(10, dtype=bool), 0.5, seed=0)) == 0

    task = tiny_task(tiny_vit())
    mask = np.zeros(len(task.train), dtype=bool)
    mask[[1, 2, 30]] = True
    task = dataclasses.replace(task, train=dataclasses.replace(task.train, poisoned=mask))
    abl = get_defence("abl")
    settings = abl.configure(
        {"isolation": "oracle", "unlearning_optimizer": "adam", "isolation_ratio": 0.05}
    )
    with caplog.at_level("INFO"):
        outcome = run_defence(abl, task, settings)
    assert outcome.metrics["isolated"] == 2 and outcome.metrics["isolation_precision"] == 1.0
    assert "by the ground truth (oracle)" in caplog.text
    with pytest.raises(ValueError, match="abl.isolation: Input should be 'loss' or 'oracle'"):
        abl.configure({"isolation": "truth"})


TINY_VIT = {"name": "vit_tiny_patch16_224", "image_size": 16}
TINY_VIT["kwargs"] = {"patch_size": 4, "embed_dim": 24, "num_heads": 2, "depth": 2}
IEU_SETTINGS = {
    "defence": {"tau": 0.5, "gate_depth": 1, "queue_capacity": 4},
    "gate_training": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "warmup_epochs": 0},
}


def test_ieu_runs_through_the_registry_whole_or_stage_by_stage_alike():
    """IEU is a registered multi-stage defence: run in one call (as a script does) or
    stage by stage with each stage's outputs handed on (as the pipeline's nodes do), it
    makes the same gate, threshold and model."""
    models = ModelBlock.model_validate(
        {
            "robust": TINY_VIT,
            "gate": TINY_VIT,
            "weights": {"source": "scratch"},
            "pretrain": {"train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
        }
    )
    ieu = get_defence("ieu")
    assert ieu.needs == ("models",) and ieu.block == "ieu" and "ieu" not in baseline_methods()
    assert [stage.name for stage in ieu.stages] == ["train_gate", "gate_threshold"]
    settings = ieu.configure(IEU_SETTINGS)
    whole = run_defence(ieu, tiny_task(tiny_vit(), models=models), settings)

    task = tiny_task(tiny_vit(), models=models)
    gate, gate_history, gate_epochs = run_stage(ieu, "train_gate", task, settings)
    assert list(gate_history.epoch) == [1, 2] and gate_history.kept.sum() == 1
    assert gate_epochs["confidence"].shape == (2, 33) and gate_epochs["poisoned"].shape == (33,)
    assert len(gate.blocks) == 1  # the backbone cut to gate_depth blocks
    (confidence,) = run_stage(ieu, "gate_threshold", task, settings, ieu_gate=gate)
    assert float(confidence["tau"]) == 0.5 and confidence["confidence"].shape == (33,)
    staged = run_defence(ieu, task, settings, ieu_gate=gate, gate_confidence=confidence)
    for a, b in zip(
        whole.model.state_dict().values(), staged.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert whole.metrics["gate_tau"] == staged.metrics["gate_tau"] == 0.5
    assert {"gate_precision", "gate_recall", "unlearning_steps"} <= set(whole.metrics)
    with pytest.raises(ValueError, match="defence 'ieu' needs the task's 'models' input"):
        run_defence(ieu, tiny_task(tiny_vit()), settings)
    with pytest.raises(ValueError, match="has no stage 'gate'; its stages: train_gate, gate_th"):
        run_stage(ieu, "gate", task, settings)


def test_a_stage_that_reads_what_no_earlier_stage_makes_is_refused_at_registration():
    late = Stage("second", lambda task, settings, first: (1,), outputs=("second",))
    with pytest.raises(ValueError, match=r"stage 'second' of 'x' reads \['first'\] before"):
        register_defence("x", IEUSettings, stages=(Stage("second", late.run, ("s",), ("first",)),))
    with pytest.raises(ValueError, match=r"defence 'x' reads \['missing'\], which no stage"):
        register_defence("x", IEUSettings, stages=(late,), inputs=("missing",))
    assert "x" not in DEFENCES


def test_unknown_defence_lists_the_registered_ones():
    with pytest.raises(
        ValueError, match="unknown defence 'abll'; valid: abl, abl_oracle, attnblock"
    ):
        get_defence("abll")
    assert {"none", "abl", "ibau", "attnblock"} <= set(DEFENCES)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rounds": 0}, "baselines.ibau.rounds: .* greater than or equal to 1, got 0"),
        ({"rounds": 2.5}, "baselines.ibau.rounds: Input should be a valid integer, got 2.5"),
        ({"outer_lr": float("nan")}, "baselines.ibau.outer_lr: Input should be a finite number"),
        ({"max_rms": "big"}, "baselines.ibau.max_rms: Input should be a valid number, got 'big'"),
        ({"portion": 1.5}, "baselines.ibau.portion: .* less than or equal to 1, got 1.5"),
        ({"K": 5}, "baselines.ibau.K: unknown setting; valid: batch_size, "),
    ],
)
def test_bad_ibau_settings_name_the_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        get_defence("ibau").configure(params)


def test_abl_and_attnblock_settings_are_checked():
    with pytest.raises(
        ValueError, match="abl.isolation_loss: Input should be 'flooding' or 'lga', got 'gla'"
    ):
        get_defence("abl").configure({"isolation_loss": "gla"})
    with pytest.raises(ValueError, match="abl.isolation_ratio: Input should be greater than 0"):
        get_defence("abl").configure({"isolation_ratio": 0})
    with pytest.raises(ValueError, match="attnblock.discard_ratio: Input should be less than 1"):
        get_defence("attnblock").configure({"discard_ratio": 1.0})
    unbounded = settings_from_params(IBAUSettings, {"max_rms": None}, "baselines.ibau")
    assert unbounded.max_rms is None
    assert get_defence("attnblock").configure(None) == AttnBlockSettings()
