import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.training.engine import (
    CrossEntropy,
    Schedule,
    TrainConfig,
    fit,
    guarded_step,
    make_optimizer,
    set_hyperparameters,
)
from ieu_potion.training.views import ViewMaker, _uniform
from tests.badinput import bad_input, rejects


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))


def test_schedule_warms_up_then_decays_to_min_lr():
    config = TrainConfig(
        epochs=4, batch_size=8, lr=1e-3, min_lr=1e-5, warmup_epochs=1, weight_decay=(0.04, 0.1)
    )
    s = Schedule(config, steps_per_epoch=10)
    assert s.lr(0) == pytest.approx(1e-4) and s.lr(9) == pytest.approx(1e-3)
    assert s.lr(10) == pytest.approx(1e-3)
    assert s.lr(39) == pytest.approx(1e-5)
    assert s.weight_decay(0) == pytest.approx(0.04) and s.weight_decay(40) == pytest.approx(0.1)
    assert s.lr(25) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 15 / 29)))


def test_constant_schedule_after_warmup():
    config = TrainConfig(epochs=3, batch_size=8, lr=2e-3, schedule="constant", warmup_epochs=1)
    s = Schedule(config, steps_per_epoch=5)
    assert [round(s.lr(i), 6) for i in (0, 4, 5, 14)] == [4e-4, 2e-3, 2e-3, 2e-3]


def test_base_lr_scales_with_batch_size_and_bad_values_are_rejected():
    config = TrainConfig.from_params({"epochs": 1, "batch_size": 64, "base_lr": 2e-5})
    assert config.lr == pytest.approx(5e-6)
    with pytest.raises(
        ValueError, match="train.lr: Input should be less than or equal to 1, got 5.0"
    ):
        TrainConfig.from_params({"epochs": 1, "batch_size": 8, "lr": 5.0})
    with pytest.raises(ValueError, match="train.epochs: .* greater than or equal to 1, got 0"):
        TrainConfig.from_params({"epochs": 0, "batch_size": 8, "lr": 1e-3})


def test_weight_decay_only_on_matrices():
    model = tiny_model()
    optimizer = make_optimizer(model, torch.device("cpu"))
    decay, other = optimizer.param_groups
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in other["params"])


def test_every_gradient_tensor_is_clipped_to_the_limit():
    model = tiny_model()
    optimizer = make_optimizer(model, torch.device("cpu"))
    x = torch.randn(16, 3, 8, 8) * 100
    loss = model(x).pow(2).mean()
    assert guarded_step(loss, model, optimizer, clip=0.5).skipped is None
    norms = [p.grad.norm().item() for p in model.parameters()]
    assert max(norms) <= 0.5 + 1e-5 and min(norms) > 0.4


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_never_touches_the_weights(bad):
    model = tiny_model()
    optimizer = make_optimizer(model, torch.device("cpu"))
    for group in optimizer.param_groups:
        group["lr"] = 0.1
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(4, 3, 8, 8)).sum() * bad
    assert guarded_step(loss, model, optimizer, clip=1.0).skipped == "non-finite loss"
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_non_finite_gradient_never_touches_the_weights():
    model = tiny_model()
    optimizer = make_optimizer(model, torch.device("cpu"))
    for group in optimizer.param_groups:
        group["lr"] = 0.1
    before = [p.detach().clone() for p in model.parameters()]
    model[1].weight.register_hook(lambda g: g * float("nan"))
    loss = model(torch.randn(4, 3, 8, 8)).sum()
    assert guarded_step(loss, model, optimizer, clip=1.0).skipped == "non-finite gradient"
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)


def decaying_optimizer(model):
    """AdamW with a large learning rate and weight decay: any step moves the weights."""
    optimizer = make_optimizer(model, torch.device("cpu"))
    for group in optimizer.param_groups:
        group["lr"], group["weight_decay"] = 0.1, 0.5
    return optimizer


def unchanged(model, before):
    return all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@bad_input(
    "a loss no parameter depends on (a model or branch without trainable weights)",
    "step skipped and counted: no optimizer step, not even weight decay",
)
def test_a_loss_without_gradient_is_not_applied():
    model = tiny_model()
    optimizer = decaying_optimizer(model)
    before = [p.detach().clone() for p in model.parameters()]
    constant = torch.ones((), requires_grad=True) * 2.0
    why = guarded_step(constant, model, optimizer, clip=1.0).skipped
    assert why == "no parameter gets a gradient" and unchanged(model, before)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = model(torch.randn(2, 3, 8, 8)).sum()
    assert (
        guarded_step(frozen, model, optimizer, clip=1.0).skipped == "no parameter gets a gradient"
    )
    assert unchanged(model, before)


class NothingFirst(CrossEntropy):
    """Has no sample to learn from in its first batch (the IEU gate flagging it all)."""

    def __init__(self):
        super().__init__(("plain",))
        self.calls = 0

    def loss(self, model, batch):
        self.calls += 1
        return None if self.calls == 1 else super().loss(model, batch)


@bad_input(
    "an objective with no sample to learn from in a batch",
    "step skipped and counted in skipped_steps; weight decay not applied",
)
def test_a_batch_with_nothing_to_learn_moves_no_weight():
    data = tiny_set(16)
    views = ViewMaker(size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, warmup_epochs=0, weight_decay=(0.5, 0.5))
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    objective = NothingFirst()
    steps = []
    objective.after_step = lambda m, b, info: steps.append(
        [p.detach().clone() for p in m.parameters()]
    )
    history = fit(model, data, objective, config, views)
    assert history.skipped_steps == 1 and history.epochs[0]["skipped_steps"] == 1
    assert all(torch.equal(a, b.cpu()) for a, b in zip(before, steps[0], strict=True))
    assert not unchanged(model.cpu(), before)


@bad_input(
    "a model whose parameters are all frozen, or an empty training set",
    "ValueError before the first step",
)
def test_fit_refuses_a_frozen_model_and_an_empty_set():
    views = ViewMaker(size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05)
    frozen = tiny_model().requires_grad_(False)
    rejects(
        lambda: fit(frozen, tiny_set(), CrossEntropy(("plain",)), config, views, name="finetune"),
        ValueError,
        "finetune: the model has no trainable parameter",
    )
    empty = tiny_set().subset(np.array([], dtype=int))
    rejects(
        lambda: fit(tiny_model(), empty, CrossEntropy(("plain",)), config, views),
        ValueError,
        "the training set is empty",
    )


class Poisoned(CrossEntropy):
    """Cross-entropy whose loss is NaN on every third step."""

    def __init__(self):
        super().__init__(("plain",))
        self.calls = 0

    def loss(self, model, batch):
        self.calls += 1
        loss = super().loss(model, batch)
        return loss * float("nan") if self.calls % 3 == 0 else loss


def tiny_set(n=48):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 4
    images = np.zeros((n, 8, 8, 3), np.uint8)
    images[np.arange(n), labels, 0] = 255  # class = row of a bright pixel
    images += rng.integers(0, 30, images.shape, dtype=np.uint8)
    return ImageSet.clean(images, labels, ["a", "b", "c", "d"])


def test_fit_learns_skips_nan_steps_and_records_epochs():
    data = tiny_set()
    model = tiny_model()
    views = ViewMaker(size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    config = TrainConfig(epochs=6, batch_size=8, lr=0.05, warmup_epochs=0, weight_decay=(0.0, 0.0))
    history = fit(model, data, Poisoned(), config, views, evaluate=lambda m: {"accuracy": 0.0})
    assert len(history.epochs) == 6 and history.skipped_steps == 12
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert "accuracy" in history.table().columns


def test_views_shapes_and_corruption_coverage():
    views = ViewMaker(size=(16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    images = torch.full((6, 12, 12, 3), 128, dtype=torch.uint8)
    out = views(images, ("plain", "clean", "corrupted"), torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (6, 3, 16, 16) for k in ("plain", "clean", "corrupted")
    }
    torch.testing.assert_close(out["plain"], torch.full((6, 3, 16, 16), (128 / 255 - 0.5) / 0.25))
    changed = (out["corrupted"] != out["clean"]).any(1).float().mean((1, 2))
    assert (changed > 0.0).all() and (changed <= 0.6).all()
    with pytest.raises(ValueError, match="unknown views"):
        views(images, ("rotated",), torch.Generator())


@pytest.mark.parametrize("name", ["potion_badnet", "moving_trigger"])
def test_a_trigger_stamped_after_the_augmentation_never_moves(small_set, name):
    """Flipped and shifted, the stored patch leaves its corner; stamped after the
    augmentation it stays there whole (each sample's own corner where the corner is
    drawn per image), and the other samples' views are unchanged."""
    from ieu_potion.attacks import AttackConfig, poison_training_set

    params = {"name": name, "target_class": 0, "count": 8}
    data = poison_training_set(small_set, AttackConfig.from_params(params))
    views = ViewMaker(
        size=(32, 32),
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        translate=4,
        flip_p=1.0,
        jitter_p=0.0,
        grayscale_p=0.0,
    )
    idx = np.arange(len(data))
    images = torch.from_numpy(data.images)

    def clean(stamp):
        return views(images, ("clean",), torch.Generator().manual_seed(3), stamp)["clean"]

    after, stored = clean(data.stamp_for(idx)), clean(None)
    p = torch.from_numpy(data.poisoned)
    alpha = torch.from_numpy(data.overlay.alpha).expand(8, 32, 32, 1)[..., 0].bool()
    patch = alpha[:, None].expand(-1, 3, -1, -1)
    assert (after[p][patch] == 1.0).all()
    assert not (stored[p][patch].view(8, -1) == 1.0).all(dim=1).any()
    torch.testing.assert_close(after[~p], stored[~p], rtol=0, atol=0)
    # the plain view is the stored, stamped image either way
    plain = views(images, ("plain",), torch.Generator(), data.stamp_for(idx))["plain"]
    assert (plain[p][patch] == 1.0).all()


def test_translate_shifts_whole_pixels_and_brings_in_black():
    views = ViewMaker(
        size=(8, 8),
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        translate=2,
        flip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
    )
    images = torch.randint(1, 256, (64, 8, 8, 3), dtype=torch.uint8)
    out = views(images, ("clean",), torch.Generator().manual_seed(0))["clean"]
    source = images.permute(0, 3, 1, 2).float() / 255
    shifts = set()
    for i in range(len(images)):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.allclose(out[i], shifted(source[i], dy, dx), atol=1e-5)
        ]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 10
    with pytest.raises(ValueError, match="translate must be a whole number"):
        ViewMaker(size=(8, 8), mean=(0,) * 3, std=(1,) * 3, translate=8)


def shifted(x, dy, dx):
    """``x`` moved by (dy, dx) pixels, zeros where nothing comes in (a padded crop)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        :, max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def corrupt_with_torch_counting(views, x, g):
    """The corrupted view as first written: coverage as torch's mean of a bool mask."""
    b, _, h, w = x.shape
    out = x.clone()
    targets = _uniform(b, *views.corrupt_cover, g)
    max_h, max_w = max(1, int(views.corrupt_side * h)), max(1, int(views.corrupt_side * w))
    for i in range(b):
        covered = torch.zeros(h, w, dtype=torch.bool)
        while covered.float().mean() < targets[i]:
            rh = int(torch.randint(1, max_h + 1, (1,), generator=g))
            rw = int(torch.randint(1, max_w + 1, (1,), generator=g))
            top = int(torch.randint(0, h - rh + 1, (1,), generator=g))
            left = int(torch.randint(0, w - rw + 1, (1,), generator=g))
            covered[top : top + rh, left : left + rw] = True
            if torch.rand(1, generator=g) < 0.5:
                fill = torch.randn(3, rh, rw, generator=g)
            else:
                fill = torch.zeros(3, rh, rw)
            out[i, :, top : top + rh, left : left + rw] = fill
    return out


@pytest.mark.parametrize("side", [7, 30, 48])
def test_corrupted_view_counts_coverage_in_numpy_with_the_same_result(side):
    views = ViewMaker(size=(side, side), mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.rand(16, 3, side, side, generator=torch.Generator().manual_seed(side))
    for seed in range(2):
        fast = views.corrupt(x, torch.Generator().manual_seed(seed))
        slow = corrupt_with_torch_counting(views, x, torch.Generator().manual_seed(seed))
        assert torch.equal(fast, slow)


def test_cpu_adamw_is_fused_and_matches_the_per_tensor_loop():
    model = tiny_model()
    reference = copy.deepcopy(model)
    optimizer = make_optimizer(model, torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    loop = torch.optim.AdamW(
        [
            {"params": [p for p in reference.parameters() if p.ndim > 1], "decay": True},
            {"params": [p for p in reference.parameters() if p.ndim <= 1], "decay": False},
        ],
        lr=0.0,
        foreach=False,
    )
    x = torch.randn(8, 3, 8, 8)
    for _ in range(3):
        for net, opt in ((model, optimizer), (reference, loop)):
            set_hyperparameters(opt, 1e-2, 0.05)
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
