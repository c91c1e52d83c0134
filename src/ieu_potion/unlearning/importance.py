"""Per-parameter importances for SSD-style dampening (docs/methods.md section 4).

- ``ssd``: mean over batches of (dL/dtheta)^2 with L the batch-mean cross-entropy;
- ``lf``: mean over batches of |dL/dtheta| with L the batch mean of ||f(x)||_2^2;
- ``xlf``: as ``lf`` with the unsquared norm ||f(x)||_2 (Potion).

Computed once per data set, model in eval mode, training augmentation on (the clean
view), every gradient flattened into one buffer and accumulated by
``kernels.accumulate_importance`` in fp32.  Under torchrun the ranks share the batches
and their sums are added.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ieu_potion import kernels
from ieu_potion.data.imageset import ImageSet
from ieu_potion.training import distributed
from ieu_potion.training.engine import autocast
from ieu_potion.training.views import ViewMaker


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def _squared_norm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.pow(2).sum(dim=1).mean()


def _norm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.norm(dim=1).mean()


KINDS: dict[str, tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "ssd": ("square", _cross_entropy),
    "lf": ("abs", _squared_norm),
    "xlf": ("abs", _norm),
}


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown importance {kind!r}; valid: {', '.join(KINDS)}")


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """Every parameter, concatenated in ``model.parameters()`` order (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def load_flat_parameters(model: nn.Module, flat: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(flat.to(next(model.parameters()).dtype), model.parameters())


def importances(
    model: nn.Module,
    data: ImageSet,
    kind: str,
    views: ViewMaker,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """The ``kind`` importance of every parameter of ``model`` on ``data``: flat fp32."""
    check_kind(kind)
    if len(data) == 0:
        raise ValueError("importances need at least one sample")
    mode, loss_fn = KINDS[kind]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters()]
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float32, device=device)
    # One gradient buffer for the whole model, reused by every batch.
    flat = torch.empty(total.numel(), dtype=params[0].dtype, device=device)
    batches = math.ceil(len(data) / batch_size)
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    ranks = distributed.world()
    for b in tqdm(range(batches), desc=f"{kind} importance", leave=False, disable=None):
        chunk = slice(b * batch_size, (b + 1) * batch_size)
        # every rank draws every batch's views (one process's random numbers) and
        # differentiates every ranks.size-th batch; the ranks' sums are added below
        stamp = data.stamp_for(np.arange(len(data))[chunk])
        x = views(images[chunk].to(device), ("clean",), generator, stamp)["clean"]
        if b % ranks.size != ranks.rank:
            continue
        with autocast(device):
            logits = model(x).float()
        grads = torch.autograd.grad(
            loss_fn(logits, labels[chunk].to(device)), params, allow_unused=True
        )
        torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(grads, params, strict=True)
            ],
            out=flat,
        )
        kernels.accumulate_importance(flat, total, mode, 1.0 / batches)
    distributed.reduce_sum(total)
    model.train(was_training)
    return total
