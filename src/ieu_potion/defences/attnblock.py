"""AttnBlock (Subramanya et al., arXiv 2206.08477): a test-time defence for ViTs.

For each test image: the gradient-weighted attention rollout of the predicted class
(per layer, attention x its gradient averaged over heads, negatives clipped, the lowest
``discard_ratio`` of entries zeroed, (A + I) / 2 normalised by rows, multiplied through
the layers; the class token's row over the patches), upsampled to the image, smoothed
by a box filter, and a black square centred on its maximum; then the image is classified
again.  Sizes are fractions of the image side: the authors' 31 px filter and 30 px
square at 224 px.  Applied to the undefended model; where that is no ViT the method does
not apply, and its results say so (``not_applicable``) instead of being left out.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from torch import nn

from ieu_potion.config import Count, Share, settings
from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.registry import Outcome, Task, register_defence
from ieu_potion.models import is_vit
from ieu_potion.training.views import ViewMaker

log = logging.getLogger(__name__)


@settings
class AttnBlockSettings:
    """``baselines.attnblock``: attention rollout and the blanked square (ViTs only)."""

    # share of the attention entries zeroed in the rollout
    discard_ratio: Annotated[float, Strict(), Field(ge=0, lt=1)] = 0.9
    # box filter side / image side: the authors' 31 px at 224 px
    filter_fraction: Share = 0.1384
    # blanked square side / image side: the authors' 30 px at 224 px
    square_fraction: Share = 0.1339
    batch_size: Count = 64  # images blocked per batch


@contextmanager
def attention_probabilities(model: nn.Module):
    """Collects each block's attention probabilities (B, heads, N, N) during a forward
    pass, into the yielded list; timm's fused attention is switched off meanwhile."""
    maps: list[torch.Tensor] = []
    handles, modules = [], []
    for block in model.blocks:
        attn = block.attn
        if not (hasattr(attn, "fused_attn") and hasattr(attn, "attn_drop")):
            raise ValueError(
                "AttnBlock reads attention through timm's Attention module (fused_attn, "
                f"attn_drop); {type(attn).__name__} has neither"
            )
        modules.append((attn, attn.fused_attn))
        attn.fused_attn = False
        handles.append(attn.attn_drop.register_forward_hook(lambda m, i, out: maps.append(out)))
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
        for attn, fused in modules:
            attn.fused_attn = fused


def gradient_rollout(model: nn.Module, inputs: torch.Tensor, discard_ratio: float) -> torch.Tensor:
    """Relevance of each patch for the predicted class: (B, grid_h, grid_w), >= 0."""
    with torch.enable_grad(), attention_probabilities(model) as maps:
        logits = model(inputs)
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        grads = torch.autograd.grad(score, maps)
    batch, tokens = maps[0].shape[0], maps[0].shape[-1]
    eye = torch.eye(tokens, device=inputs.device)
    result = eye.expand(batch, tokens, tokens)
    for attention, grad in zip(maps, grads, strict=True):
        fused = (attention * grad).mean(1).clamp(min=0).detach()
        flat = fused.flatten(1)
        drop = int(flat.shape[1] * discard_ratio)
        if drop:
            flat = flat.scatter(1, flat.topk(drop, dim=1, largest=False).indices, 0.0)
        a = (flat.view_as(fused) + eye) / 2
        result = (a / a.sum(-1, keepdim=True)) @ result
    relevance = result[:, 0, model.num_prefix_tokens :]
    return relevance.reshape(batch, *model.patch_embed.grid_size)


def odd(side: int) -> int:
    return side if side % 2 else side + 1


def smooth(relevance: torch.Tensor, size: int) -> torch.Tensor:
    """Box filter (sum over a ``size`` x ``size`` window, zero padding) of (B, H, W)."""
    size = odd(max(1, size))
    return F.avg_pool2d(relevance[:, None], size, stride=1, padding=size // 2)[:, 0]


def blank_at_max(images: np.ndarray, relevance: np.ndarray, side: int) -> np.ndarray:
    """``images`` (B, H, W, 3) uint8 with a black ``side`` x ``side`` square centred on
    each relevance map's maximum (shifted to stay inside the image)."""
    out = images.copy()
    height, width = images.shape[1:3]
    side = max(1, min(side, height, width))
    for i, rel in enumerate(relevance):
        row, col = np.unravel_index(int(np.argmax(rel)), rel.shape)
        top = int(np.clip(row - side // 2, 0, height - side))
        left = int(np.clip(col - side // 2, 0, width - side))
        out[i, top : top + side, left : left + side] = 0
    return out


def block(
    model: nn.Module, images: np.ndarray, views: ViewMaker, s: AttnBlockSettings
) -> np.ndarray:
    """The images with the square of highest smoothed relevance blanked."""
    device = next(model.parameters()).device
    inputs = views(torch.from_numpy(images).to(device), ("plain",), torch.Generator())["plain"]
    relevance = gradient_rollout(model, inputs, s.discard_ratio)
    height, width = images.shape[1:3]
    relevance = F.interpolate(relevance[:, None], size=(height, width), mode="bilinear")[:, 0]
    relevance = smooth(relevance, round(s.filter_fraction * height))
    return blank_at_max(images, relevance.cpu().numpy(), round(s.square_fraction * height))


@torch.no_grad()
def blocked_predictions(
    model: nn.Module, data: ImageSet, views: ViewMaker, s: AttnBlockSettings
) -> np.ndarray:
    device = next(model.parameters()).device
    predictions = []
    for start in range(0, len(data), s.batch_size):
        blanked = block(model, data.images[start : start + s.batch_size], views, s)
        inputs = views(torch.from_numpy(blanked).to(device), ("plain",), torch.Generator())["plain"]
        predictions.append(model(inputs).argmax(1).cpu().numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


@register_defence("attnblock", AttnBlockSettings, needs=("undefended",), makes_model=False)
def attnblock(task: Task, settings: AttnBlockSettings) -> Outcome:
    """AttnBlock: blank the most relevant square of each test image, classify again."""
    model = task.undefended.eval()
    if not is_vit(model):
        log.warning(
            "AttnBlock: the robust module (%s) is no ViT; the method does not apply",
            model.spec.name,
        )
        reason = f"robust module {model.spec.name} is no ViT"
        return Outcome(
            None, pd.DataFrame([{"applicable": False, "reason": reason}]), {"not_applicable": 1.0}
        )
    views = task.views(model)
    clean = blocked_predictions(model, task.clean_test, views, settings)
    triggered = blocked_predictions(model, task.triggered_test, views, settings)
    metrics = {
        "clean_accuracy": float((clean == task.clean_test.true_labels).mean()),
        "attack_success_rate": float((triggered == task.target_class).mean()),
        "poison_healed": float((triggered == task.triggered_test.true_labels).mean()),
        "not_applicable": 0.0,
    }
    log.info("AttnBlock: %s", metrics)
    return Outcome(None, pd.DataFrame([{"applicable": True, **metrics}]), metrics)
