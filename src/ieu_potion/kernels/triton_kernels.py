"""Triton implementations of the three kernels (the reference is ``reference.py``).

Each function here takes already validated arguments (``kernels/__init__.py`` checks shapes,
modes and labels once for both paths) and launches one kernel over contiguous buffers.
Arithmetic is fp32 whatever the storage dtype; results are stored in the dtype the
reference returns.  The tests compare every output with the reference, NaN and inf
included.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements per program for the flat elementwise kernels.  Large blocks keep the grid small
# on a GPU; the interpreter runs one program at a time, so a large block is also faster there.
FLAT_BLOCK = 2048
# Classes handled per chunk by the masked cross-entropy; rows with more classes loop.
MAX_CLASS_BLOCK = 4096


def new_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised output storage; every element is written by a kernel (the tests
    replace this with a poisoned allocation to check that)."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _row_stats(row_ptr, classes, BLOCK_C: tl.constexpr):
    """max, sum(exp(x - max)) and sum(x) of one row, in chunks of BLOCK_C (two passes).

    sum(x) is finite exactly when every logit is (barring overflow past 3e38)."""
    offsets = tl.arange(0, BLOCK_C)
    running_max = tl.full((BLOCK_C,), float("-inf"), tl.float32)
    for start in range(0, classes, BLOCK_C):
        mask = start + offsets < classes
        x = tl.load(row_ptr + start + offsets, mask=mask, other=float("-inf")).to(tl.float32)
        running_max = tl.maximum(running_max, x, propagate_nan=tl.PropagateNan.ALL)
    row_max = tl.max(running_max, axis=0)
    running_sum = tl.zeros((BLOCK_C,), tl.float32)
    running_total = tl.zeros((BLOCK_C,), tl.float32)
    for start in range(0, classes, BLOCK_C):
        mask = start + offsets < classes
        x = tl.load(row_ptr + start + offsets, mask=mask, other=0.0).to(tl.float32)
        running_sum += tl.where(mask, tl.exp(x - row_max), 0.0)
        running_total += x
    return row_max, tl.sum(running_sum, axis=0), tl.sum(running_total, axis=0)


@triton.jit
def _masked_ce_kernel(
    gate_ptr,
    logits_ptr,
    labels_ptr,
    row_loss_ptr,
    confidence_ptr,
    flagged_ptr,
    grad_ptr,
    batch,
    classes,
    tau,
    inv_rows,
    VIEWS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # One program per sample: the gate row is reduced once and shared by its VIEWS rows.
    sample = tl.program_id(0).to(tl.int64)
    label = tl.load(labels_ptr + sample).to(tl.int64)
    gate_row = gate_ptr + sample * classes
    gate_max, gate_sum, _ = _row_stats(gate_row, classes, BLOCK_C)
    gate_lse = gate_max + tl.log(gate_sum)
    confidence = tl.exp(gate_max - gate_lse)
    flagged = confidence > tau  # False for a NaN confidence, as in torch
    tl.store(confidence_ptr + sample, confidence)
    tl.store(flagged_ptr + sample, flagged.to(tl.int8))
    # An out-of-range label (only possible on CUDA, where the caller does not sync to check)
    # reads as NaN, so the loss is NaN and guarded_step refuses the step.
    valid = (label >= 0) & (label < classes)
    gate_loss = gate_lse - tl.load(gate_row + label, mask=valid, other=float("nan")).to(tl.float32)

    offsets = tl.arange(0, BLOCK_C)
    for view in tl.static_range(VIEWS):
        row = view * batch + sample
        row_ptr = logits_ptr + row * classes
        row_max, row_sum, row_total = _row_stats(row_ptr, classes, BLOCK_C)
        lse = row_max + tl.log(row_sum)
        robust_loss = lse - tl.load(row_ptr + label, mask=valid, other=float("nan")).to(tl.float32)
        # A flagged row's loss is the gate's; the robust logits still poison it (and its
        # gradient) when any of them is not finite, as the reference's ``0 * log_softmax``
        # does, so that guarded_step refuses the step instead of training a broken module.
        poison = 0.0 * row_total
        tl.store(row_loss_ptr + row, tl.where(flagged, gate_loss + poison, robust_loss))
        if WRITE_GRAD:
            for start in range(0, classes, BLOCK_C):
                cols = start + offsets
                mask = cols < classes
                x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                grad = (tl.exp(x - lse) - (cols == label).to(tl.float32)) * inv_rows
                grad = tl.where(flagged, poison, grad)
                tl.store(grad_ptr + row * classes + cols, grad.to(grad_ptr.dtype.element_ty), mask)


def masked_cross_entropy_forward(
    gate_logits: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    tau: float,
    views: int,
    write_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Loss (mean over rows), confidence, flags and, if asked, d loss / d logits."""
    batch, classes = gate_logits.shape
    gate_logits, logits, labels = (t.contiguous() for t in (gate_logits, logits, labels))
    device = logits.device
    row_loss = new_buffer((views * batch,), torch.float32, device)
    confidence = new_buffer((batch,), torch.float32, device)
    flagged = new_buffer((batch,), torch.int8, device)
    # Without a gradient to write, the kernel never touches its grad pointer.
    grad = new_buffer(logits.shape, logits.dtype, device) if write_grad else row_loss
    block = min(triton.next_power_of_2(classes), MAX_CLASS_BLOCK)
    _masked_ce_kernel[(batch,)](
        gate_logits,
        logits,
        labels,
        row_loss,
        confidence,
        flagged,
        grad,
        batch,
        classes,
        float(tau),
        1.0 / (views * batch),
        VIEWS=views,
        WRITE_GRAD=write_grad,
        BLOCK_C=block,
        num_warps=1 if block <= 256 else 4 if block <= 1024 else 8,
    )
    return row_loss.mean(), confidence, flagged.bool(), grad if write_grad else None


@triton.jit
def _accumulate_kernel(
    grad_ptr, importance_ptr, n, scale, SQUARE: tl.constexpr, BLOCK: tl.constexpr
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    g = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    value = g * g if SQUARE else tl.abs(g)
    total = tl.load(importance_ptr + offsets, mask=mask)
    tl.store(importance_ptr + offsets, total + scale * value, mask=mask)


def accumulate_importance(
    grads_flat: torch.Tensor, importance_flat: torch.Tensor, mode: str, scale: float
) -> None:
    """``importance += scale * |g|`` or ``scale * g**2`` in one launch, in place."""
    n = grads_flat.numel()
    grid = (triton.cdiv(n, FLAT_BLOCK),)
    _accumulate_kernel[grid](
        grads_flat, importance_flat, n, float(scale), SQUARE=mode == "square", BLOCK=FLAT_BLOCK
    )


@triton.jit
def _dampen_kernel(
    params_ptr, forget_ptr, retain_ptr, alphas_ptr, out_ptr, n, lam, K, BLOCK: tl.constexpr
):
    # Parameters and importances are read once per block; the K candidates are written from
    # registers, so K alphas cost K writes but one read.
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    theta = tl.load(params_ptr + offsets, mask=mask).to(tl.float32)
    i_f = tl.load(forget_ptr + offsets, mask=mask).to(tl.float32)
    i_r = tl.load(retain_ptr + offsets, mask=mask).to(tl.float32)
    positive = i_f > 0
    ratio = tl.where(positive, lam * i_r / tl.where(positive, i_f, 1.0), 1.0)
    factor_if_selected = tl.minimum(ratio, 1.0, propagate_nan=tl.PropagateNan.ALL)
    for k in range(K):
        alpha = tl.load(alphas_ptr + k)
        factor = tl.where(i_f > alpha * i_r, factor_if_selected, 1.0)
        out = (theta * factor).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + k * n + offsets, out, mask=mask)


def dampen(
    params_flat: torch.Tensor,
    imp_forget: torch.Tensor,
    imp_retain: torch.Tensor,
    alphas: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """(K, N) dampened copies of the fp32-importance SSD rule, one per alpha, in one pass."""
    n = params_flat.numel()
    alphas = alphas.to(device=params_flat.device, dtype=torch.float32).contiguous()
    out = new_buffer((alphas.numel(), n), params_flat.dtype, params_flat.device)
    grid = (triton.cdiv(n, FLAT_BLOCK),)
    _dampen_kernel[grid](
        params_flat.contiguous(),
        imp_forget.contiguous(),
        imp_retain.contiguous(),
        alphas,
        out,
        n,
        float(lam),
        K=alphas.numel(),
        BLOCK=FLAT_BLOCK,
    )
    return out
