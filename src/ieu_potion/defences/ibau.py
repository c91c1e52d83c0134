"""I-BAU, implicit backdoor adversarial unlearning (Zeng et al., ICLR 2022).

A post-training defence: the undefended model is repaired on a small trusted clean set
by the minimax  min_theta max_delta  CE(f_theta(x + delta), y)  over one universal
perturbation delta (in the model's normalised input space).  Each round:

1. inner maximisation: one pass over the clean set, an SGD step on delta per batch
   against the model's own predictions, with a small L2 penalty on delta;
2. outer minimisation: per batch, the hypergradient of the clean loss (delta added to a
   ``portion`` of the batch, at least one sample) with respect to the weights through
   delta's fixed point (``fixed_point_hypergradient``: K fixed-point iterations of the
   implicit function theorem), then an Adam step on the weights.

The model stays in eval mode throughout (BatchNorm statistics frozen, no dropout), as in
the authors' code.  Unlike that code, the perturbation is projected onto the ball
||delta||_2 <= ``max_rms`` * sqrt(numel) after every step (the authors' projection is
commented out; null here restores the unbounded search).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ieu_potion.config import Count, Natural, NonNegative, Positive, Share, settings
from ieu_potion.defences.registry import Outcome, Task, register_defence
from ieu_potion.training.engine import format_record

log = logging.getLogger(__name__)


@settings
class IBAUSettings:
    """``baselines.ibau``: the implicit hypergradient's rounds and steps."""

    rounds: Count = 5  # perturbation / model update rounds
    fixed_point_iterations: Count = 5  # K
    inner_lr: Positive = 0.1  # step of the fixed-point map delta - lr * grad
    perturbation_lr: Positive = 10.0  # SGD on delta in the inner maximisation
    penalty: NonNegative = 0.001  # weight of ||delta||^2 in the inner loss
    outer_lr: Positive = 1e-3  # Adam on the weights
    portion: Share = 0.01  # share of each outer batch that carries delta (at least one)
    batch_size: Count = 64  # trusted samples per step
    max_rms: Positive | None = 0.2  # bound on ||delta||_2 / sqrt(numel); null: unbounded
    seed: Natural = 0  # batch order and the carried share (the run's seed is added)


def fixed_point_hypergradient(
    delta: torch.Tensor,
    params: Sequence[torch.Tensor],
    inner_loss: Callable[[torch.Tensor], torch.Tensor],
    outer_loss: Callable[[torch.Tensor], torch.Tensor],
    iterations: int,
    inner_lr: float,
) -> list[torch.Tensor]:
    """d outer_loss(delta*(theta), theta) / d theta at a fixed point ``delta`` of
    Phi(delta) = delta - inner_lr * d inner_loss / d delta, by the implicit function
    theorem: v = sum_{k < K} (dPhi/d delta^T)^k  d outer/d delta, then
    grad = d outer/d theta + (dPhi/d theta)^T v.  ``params`` are what both losses read."""
    delta = delta.detach().requires_grad_(True)
    outer = outer_loss(delta)
    direct = torch.autograd.grad(outer, [delta, *params], allow_unused=True)
    g_delta = direct[0]
    (inner_grad,) = torch.autograd.grad(inner_loss(delta), delta, create_graph=True)
    mapped = delta - inner_lr * inner_grad
    v = torch.zeros_like(delta)
    for _ in range(iterations):
        (jv,) = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)
        v = jv + g_delta
    indirect = torch.autograd.grad(mapped, list(params), grad_outputs=v, allow_unused=True)
    return [
        (d if d is not None else torch.zeros_like(p)) + (i if i is not None else 0)
        for p, d, i in zip(params, direct[1:], indirect, strict=True)
    ]


def project(delta: torch.Tensor, max_rms: float | None) -> None:
    """Shrink ``delta`` in place onto ||delta||_2 <= max_rms * sqrt(numel)."""
    if max_rms is None:
        return
    radius = max_rms * math.sqrt(delta.numel())
    norm = float(delta.norm())
    if norm > radius:
        delta.mul_(radius / norm)


def _batches(inputs: torch.Tensor, labels: torch.Tensor, size: int, rng):
    order = torch.from_numpy(rng.permutation(len(inputs)))
    for start in range(0, len(inputs), size):
        idx = order[start : start + size]
        yield inputs[idx], labels[idx]


def unlearn(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, s: IBAUSettings, after_round
):
    """The I-BAU rounds on normalised ``inputs`` (N, 3, h, w); ``after_round(r, delta)``
    returns a record of metrics for the history.  Returns (history rows, delta)."""
    params = [p for p in model.parameters() if p.requires_grad]
    outer_opt = torch.optim.Adam(params, lr=s.outer_lr)
    rng = np.random.default_rng(s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    rows, skipped = [], 0
    for r in range(s.rounds):
        delta = torch.zeros((1, *inputs.shape[1:]), device=inputs.device, requires_grad=True)
        delta_opt = torch.optim.SGD([delta], lr=s.perturbation_lr)
        for x, _ in _batches(inputs, labels, s.batch_size, rng):
            with torch.no_grad():
                predicted = model(x).argmax(1)
            loss = -F.cross_entropy(model(x + delta), predicted) + s.penalty * delta.pow(2).sum()
            delta_opt.zero_grad()
            loss.backward()
            delta_opt.step()
            with torch.no_grad():
                project(delta, s.max_rms)
        perturbation = delta.detach()
        outer_losses = []
        for x, y in _batches(inputs, labels, s.batch_size, rng):
            carried = torch.zeros(len(x), 1, 1, 1, device=x.device)
            count = max(1, round(s.portion * len(x)))
            carried[torch.randperm(len(x), generator=generator)[:count].to(x.device)] = 1.0

            def inner_loss(d, x=x, y=y):
                return -F.cross_entropy(model(x + d), y) + s.penalty * d.pow(2).sum()

            def outer_loss(d, x=x, y=y, carried=carried):
                return F.cross_entropy(model(x + carried * d), y)

            grads = fixed_point_hypergradient(
                perturbation, params, inner_loss, outer_loss, s.fixed_point_iterations, s.inner_lr
            )
            if not all(bool(torch.isfinite(g).all()) for g in grads):
                skipped += 1
                log.warning("I-BAU: non-finite hypergradient; outer step skipped")
                continue
            outer_opt.zero_grad(set_to_none=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g.detach()
            outer_opt.step()
            with torch.no_grad():
                outer_losses.append(float(outer_loss(perturbation)))
        record = {
            "round": r + 1,
            "outer_loss": float(np.mean(outer_losses)) if outer_losses else math.nan,
            "perturbation_norm": float(perturbation.norm()),
            "perturbation_rms": float(perturbation.norm()) / math.sqrt(perturbation.numel()),
            "skipped_steps": skipped,
            **after_round(r, perturbation),
        }
        skipped = 0
        log.info("I-BAU round %d/%d: %s", r + 1, s.rounds, format_record(record))
        rows.append(record)
    return rows, perturbation


@register_defence("ibau", IBAUSettings, needs=("undefended", "trusted"))
def ibau(task: Task, settings: IBAUSettings) -> Outcome:
    """I-BAU: minimax unlearning of a universal perturbation on a small clean set."""
    model = copy.deepcopy(task.undefended).to(task.recipe.torch_device()).eval()
    views = task.views(model)
    device = next(model.parameters()).device
    images = torch.from_numpy(task.trusted.images).to(device)
    with torch.no_grad():
        inputs = torch.cat(
            [
                views(images[i : i + 256], ("plain",), torch.Generator())["plain"]
                for i in range(0, len(images), 256)
            ]
        )
    labels = torch.from_numpy(task.trusted.true_labels).to(device)
    log.info("I-BAU on %d trusted clean samples, %d rounds", len(labels), settings.rounds)
    # The hypergradient differentiates twice; only the math kernel of scaled dot-product
    # attention (ViTs) has a second derivative.
    with sdpa_kernel(SDPBackend.MATH):
        rows, _ = unlearn(
            model, inputs, labels, task.replicate(settings), lambda r, d: task.evaluate(model)
        )
    model.eval()
    table = pd.DataFrame(rows)
    last = table.iloc[-1]
    metrics = {
        k: float(last[k])
        for k in (
            "clean_accuracy",
            "attack_success_rate",
            "poison_healed",
            "perturbation_norm",
            "perturbation_rms",
        )
    }
    metrics.update(trusted_samples=len(labels), skipped_steps=int(table.skipped_steps.sum()))
    return Outcome(model, table, metrics)
