"""Hot loops behind one interface, and the one place that picks how they run.

The rest of the code calls only the three functions exported here.  Each checks its
arguments once, then runs either the Triton kernel (``triton_kernels.py``) or the pure-torch
reference (``reference.py``, the executable specification):

- ``auto`` (default): Triton when every tensor is on CUDA, or when the Triton interpreter
  was switched on (``TRITON_INTERPRET=1`` exported before Python started); the reference
  otherwise.
- ``IEU_POTION_KERNELS=reference`` forces the reference, ``IEU_POTION_KERNELS=triton``
  forces Triton (an error where it cannot run), for debugging either side.
"""

from __future__ import annotations

import os

import torch

from ieu_potion.kernels import reference

__all__ = ["accumulate_importance", "backend", "dampen", "masked_cross_entropy"]

BACKEND_VARIABLE = "IEU_POTION_KERNELS"
BACKENDS = ("auto", "triton", "reference")
IMPORTANCE_MODES = ("abs", "square")
# Triton reads TRITON_INTERPRET when it is imported, so only its value at start-up counts.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "") == "1"


def backend(*tensors: torch.Tensor) -> str:
    """``"triton"`` or ``"reference"`` for a call on these tensors (see the module doc)."""
    choice = os.environ.get(BACKEND_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"{BACKEND_VARIABLE}={choice!r} is not one of: {', '.join(BACKENDS)}")
    if choice == "reference":
        return "reference"
    runnable = INTERPRETER or all(t.is_cuda for t in tensors)
    if choice == "triton" and not runnable:
        raise RuntimeError(
            f"{BACKEND_VARIABLE}=triton needs CUDA tensors, or TRITON_INTERPRET=1 exported "
            "before Python starts; these tensors are on "
            + ", ".join(sorted({str(t.device) for t in tensors}))
        )
    return "triton" if runnable else "reference"


def _triton():
    from ieu_potion.kernels import triton_kernels

    return triton_kernels


class _TritonMaskedCrossEntropy(torch.autograd.Function):
    """The gradient is written by the forward kernel; backward only scales it."""

    @staticmethod
    def forward(ctx, gate_logits, logits, labels, tau, views):
        loss, confidence, flagged, grad = _triton().masked_cross_entropy_forward(
            gate_logits.detach(), logits.detach(), labels, tau, views, ctx.needs_input_grad[1]
        )
        if grad is not None:
            ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(confidence, flagged)
        return loss, confidence, flagged

    @staticmethod
    def backward(ctx, grad_loss, _confidence, _flagged):
        (grad,) = ctx.saved_tensors
        return None, grad * grad_loss.to(grad.dtype), None, None, None


def masked_cross_entropy(
    gate_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, tau: float, views: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IEU's masked-logit cross-entropy: (mean loss, gate confidence (B,), flags (B,)).

    ``gate_logits`` (B, C) from the poisoned module (no gradient flows to it), ``logits``
    (views * B, C) from the robust module, view-major; ``labels`` (B,) in [0, C).  See
    ``reference.masked_cross_entropy`` for the definition.
    """
    if gate_logits.ndim != 2:
        raise ValueError(f"gate_logits must be (B, C), got {tuple(gate_logits.shape)}")
    batch, classes = gate_logits.shape
    if views < 1 or logits.shape != (views * batch, classes):
        raise ValueError(
            f"logits must have shape ({views} * {batch}, {classes}), got {tuple(logits.shape)}"
        )
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    # Checking CUDA labels would synchronise every step; there the kernel turns a bad label
    # into a NaN loss instead, which guarded_step refuses to apply.
    if batch and not labels.is_cuda and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"labels must lie in [0, {classes}); got {int(labels.min())}..{int(labels.max())}"
        )
    if backend(gate_logits, logits, labels) == "triton":
        return _TritonMaskedCrossEntropy.apply(gate_logits, logits, labels, tau, views)
    return reference.masked_cross_entropy(gate_logits, logits, labels, tau, views)


def _check_flat(name: str, tensor: torch.Tensor, numel: int) -> None:
    if tensor.ndim != 1 or tensor.numel() != numel:
        raise ValueError(
            f"{name} must be a flat buffer of {numel} elements, got {tuple(tensor.shape)}"
        )


def _check_importance(name: str, tensor: torch.Tensor, numel: int) -> None:
    _check_flat(name, tensor, numel)
    if tensor.dtype != torch.float32:
        raise ValueError(
            f"{name} must be float32 (importances accumulate in fp32), got {tensor.dtype}"
        )


def accumulate_importance(
    grads_flat: torch.Tensor, importance_flat: torch.Tensor, mode: str, scale: float
) -> None:
    """``importance += scale * |g|`` (mode ``abs``) or ``scale * g**2`` (``square``), in
    place over one flat fp32 buffer, whatever the gradient dtype."""
    if mode not in IMPORTANCE_MODES:
        raise ValueError(f"unknown importance mode {mode!r}; valid: {', '.join(IMPORTANCE_MODES)}")
    if grads_flat.shape != importance_flat.shape:
        raise ValueError(
            f"gradient {tuple(grads_flat.shape)} and importance {tuple(importance_flat.shape)} "
            "buffers differ in shape"
        )
    _check_importance("importance", importance_flat, grads_flat.numel())
    if not importance_flat.is_contiguous():
        raise ValueError("the importance buffer must be contiguous (it is updated in place)")
    if backend(grads_flat, importance_flat) == "triton":
        _triton().accumulate_importance(grads_flat.contiguous(), importance_flat, mode, scale)
    else:
        reference.accumulate_importance(grads_flat, importance_flat, mode, scale)


def dampen(
    params_flat: torch.Tensor,
    imp_forget: torch.Tensor,
    imp_retain: torch.Tensor,
    alpha: torch.Tensor | float,
    lam: float,
) -> torch.Tensor:
    """The SSD rule as a new buffer: (N,) for one alpha, (K, N) for a 1-D tensor of K
    alphas (one pass over the inputs).  The inputs are never modified."""
    n = params_flat.numel()
    _check_flat("params", params_flat, n)
    _check_importance("forget importance", imp_forget, n)
    _check_importance("retain importance", imp_retain, n)
    alphas = torch.as_tensor(alpha, dtype=torch.float32, device=imp_forget.device)
    if alphas.ndim > 1:
        raise ValueError(f"alpha must be a number or a 1-D tensor, got {tuple(alphas.shape)}")
    if backend(params_flat, imp_forget, imp_retain) == "reference":
        return reference.dampen(params_flat, imp_forget, imp_retain, alphas, lam)
    out = _triton().dampen(params_flat, imp_forget, imp_retain, alphas.reshape(-1), lam)
    return out if alphas.ndim == 1 else out[0]
