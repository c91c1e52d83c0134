"""Pure-torch reference implementations: the executable specification of the kernels.

Arguments arrive checked (``kernels/__init__.py`` validates once for both paths)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_cross_entropy(
    gate_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, tau: float, views: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IEU's masked-logit cross-entropy (docs/methods.md section 3, step 4).

    ``gate_logits`` (B, C) come from the frozen poisoned module; ``logits`` (views * B, C)
    from the robust module, view-major (rows ``v * B + i`` belong to sample ``i``);
    ``labels`` (B,).  Returns the mean loss over the ``views * B`` rows, the gate
    confidence (B,) and the flag ``confidence > tau`` (B,).

    For a flagged sample the combined logits are ``log_softmax(gate_logits)``, so no
    gradient reaches the robust module; for an unflagged one they are
    ``log_softmax(logits) - ln C``, whose cross-entropy equals plain cross-entropy.
    """
    batch, classes = gate_logits.shape
    gate_log_probs = F.log_softmax(gate_logits.detach().float(), dim=-1)
    confidence = gate_log_probs.max(dim=-1).values.exp()
    flagged = confidence > tau
    uniform = torch.full_like(gate_log_probs, -math.log(classes))
    log_q = torch.where(flagged[:, None], gate_log_probs, uniform)
    keep = (~flagged).to(gate_log_probs.dtype)[:, None]
    robust = F.log_softmax(logits.float(), dim=-1).view(views, batch, classes)
    combined = log_q + keep * robust
    loss = F.cross_entropy(combined.reshape(views * batch, classes), labels.repeat(views))
    return loss, confidence, flagged


# On the CPU the flat buffers are processed in slices of this many elements: a full-size
# temporary per operation would be a fresh allocation (page faults) on every call, while
# slices stay in cache.  The arithmetic is elementwise, so slicing changes no result.  On
# a GPU (the reference runs there only when forced) whole buffers are cheaper.
CPU_CHUNK = 1 << 18


def _slices(buffer: torch.Tensor):
    step = CPU_CHUNK if buffer.device.type == "cpu" else max(buffer.numel(), 1)
    return (slice(start, start + step) for start in range(0, buffer.numel(), step))


def accumulate_importance(
    grads_flat: torch.Tensor, importance_flat: torch.Tensor, mode: str, scale: float
) -> None:
    """``importance += scale * |g|`` (mode ``abs``) or ``scale * g**2`` (``square``), in
    place, in the accumulator's dtype (fp32) whatever the gradient dtype."""
    for part in _slices(grads_flat):
        g = grads_flat[part].to(importance_flat.dtype)
        importance_flat[part].add_(g.abs() if mode == "abs" else g * g, alpha=scale)


def dampen(
    params_flat: torch.Tensor,
    imp_forget: torch.Tensor,
    imp_retain: torch.Tensor,
    alpha: torch.Tensor | float,
    lam: float,
) -> torch.Tensor:
    """The SSD rule on flat buffers, as a new buffer (the input is never modified).

    Parameter i is selected where ``I_f > alpha I_r``; a selected parameter is multiplied
    by ``min(lam I_r / I_f, 1)``, which is 0 where ``I_r = 0 < I_f``.  ``alpha`` may be a
    1-D tensor of K thresholds: the result is then (K, N), one candidate per threshold.
    """
    alpha = torch.as_tensor(alpha, dtype=imp_forget.dtype, device=imp_forget.device)
    batched = alpha.ndim == 1
    a = alpha.view(-1, 1) if batched else alpha
    out = torch.empty(
        (*a.shape[:1], params_flat.numel()), dtype=params_flat.dtype, device=params_flat.device
    )
    for part in _slices(params_flat):
        i_f, i_r = imp_forget[part], imp_retain[part]
        selected = i_f > a * i_r
        ratio = torch.where(i_f > 0, lam * i_r / i_f, torch.ones_like(i_f))
        factor = torch.where(
            selected, ratio.clamp(max=1.0), torch.ones_like(selected, dtype=ratio.dtype)
        )
        out[..., part] = params_flat[part].to(factor.dtype) * factor
    return out
