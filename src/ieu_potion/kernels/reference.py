"""Pure-torch reference implementations: the executable specification of the kernels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_cross_entropy(
    gate_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, tau: float, views: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IEU's masked-logit cross-entropy (SPEC.md section 3, step 4).

    ``gate_logits`` (B, C) come from the frozen poisoned module; ``logits`` (views * B, C)
    from the robust module, view-major (rows ``v * B + i`` belong to sample ``i``);
    ``labels`` (B,).  Returns the mean loss over the ``views * B`` rows, the gate
    confidence (B,) and the flag ``confidence > tau`` (B,).

    For a flagged sample the combined logits are ``log_softmax(gate_logits)``, so no
    gradient reaches the robust module; for an unflagged one they are
    ``log_softmax(logits) - ln C``, whose cross-entropy equals plain cross-entropy.
    """
    batch, classes = gate_logits.shape
    if logits.shape != (views * batch, classes):
        raise ValueError(
            f"logits must have shape ({views} * {batch}, {classes}), got {tuple(logits.shape)}"
        )
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
