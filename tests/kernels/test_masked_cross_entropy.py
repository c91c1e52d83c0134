import math

import pytest
import torch
import torch.nn.functional as F

from ieu_potion.kernels import masked_cross_entropy


def inputs(batch=5, classes=7, views=2, flag_rows=(0, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    gate = torch.randn(batch, classes, generator=g)
    for r in flag_rows:  # a confident gate row: one logit far above the rest
        gate[r, r % classes] = 20.0
    logits = torch.randn(views * batch, classes, generator=g, requires_grad=True)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return gate, logits, labels


def test_flags_follow_the_gate_confidence():
    gate, logits, labels = inputs()
    _, confidence, flagged = masked_cross_entropy(gate, logits, labels, tau=0.95, views=2)
    torch.testing.assert_close(confidence, gate.softmax(-1).max(-1).values)
    assert flagged.tolist() == [True, False, False, True, False]


def test_flagged_rows_give_no_gradient_and_unflagged_rows_plain_cross_entropy():
    gate, logits, labels = inputs()
    loss, _, flagged = masked_cross_entropy(gate, logits, labels, tau=0.95, views=2)
    loss.backward()
    grad = logits.grad.view(2, 5, 7)
    assert grad[:, flagged].abs().max() == 0
    # Unflagged rows: the gradient of plain CE, averaged over all 2B rows.
    reference = logits.detach().clone().requires_grad_(True)
    per_row = F.cross_entropy(reference, labels.repeat(2), reduction="none").view(2, 5)
    (per_row[:, ~flagged].sum() / 10).backward()
    torch.testing.assert_close(grad[:, ~flagged], reference.grad.view(2, 5, 7)[:, ~flagged])


def test_loss_is_plain_ce_on_unflagged_rows_and_gate_ce_on_flagged_rows():
    gate, logits, labels = inputs()
    loss, _, flagged = masked_cross_entropy(gate, logits, labels, tau=0.95, views=2)
    robust = F.cross_entropy(logits, labels.repeat(2), reduction="none").view(2, 5)
    gated = F.cross_entropy(gate, labels, reduction="none").expand(2, 5)
    expected = torch.where(flagged, gated, robust).mean()
    torch.testing.assert_close(loss, expected)


def test_nothing_flagged_equals_plain_cross_entropy():
    gate, logits, labels = inputs(flag_rows=())
    loss, _, flagged = masked_cross_entropy(gate, logits, labels, tau=0.999, views=2)
    assert not flagged.any()
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels.repeat(2)))


def test_uniform_gate_rows_subtract_log_classes_only():
    """An unflagged row's combined logits are log_softmax(z_r) - ln C (SPEC step 4)."""
    gate, logits, labels = inputs(batch=1, classes=4, views=1, flag_rows=())
    loss, _, _ = masked_cross_entropy(gate, logits, labels, tau=0.99, views=1)
    combined = F.log_softmax(logits, -1) - math.log(4)
    torch.testing.assert_close(loss, F.cross_entropy(combined, labels))


def test_shape_mismatch_is_reported():
    gate, logits, labels = inputs()
    with pytest.raises(ValueError, match=r"logits must have shape \(3 \* 5, 7\)"):
        masked_cross_entropy(gate, logits, labels, tau=0.9, views=3)
