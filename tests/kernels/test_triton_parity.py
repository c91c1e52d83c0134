"""The Triton kernels against the pure-torch reference, through the dispatch point.

The Triton cases run where Triton can: on a CUDA device, or on the CPU when the interpreter
was switched on before Python started (``TRITON_INTERPRET=1 pytest tests/kernels``, which
``.ci/run`` does).  Elsewhere they are skipped and only the dispatch tests run.
"""

import pytest
import torch

from ieu_potion import kernels
from ieu_potion.kernels import reference

TRITON = kernels.INTERPRETER or torch.cuda.is_available()
needs_triton = pytest.mark.skipif(
    not TRITON, reason="Triton needs CUDA or TRITON_INTERPRET=1 exported before Python starts"
)
DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRETER else "cpu"


@pytest.fixture
def triton_path(monkeypatch):
    """Force the Triton path and make every kernel output start as garbage, so that an
    element the kernel forgets to write shows up as a mismatch."""
    from ieu_potion.kernels import triton_kernels

    def poisoned(shape, dtype, device):
        if dtype.is_floating_point:
            return torch.full(shape, float("nan"), dtype=dtype, device=device)
        return torch.full(shape, 77, dtype=dtype, device=device)

    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "triton")
    monkeypatch.setattr(triton_kernels, "new_buffer", poisoned)


def ce_inputs(batch, classes, views, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    gate = torch.randn(batch, classes, generator=g) * 2
    rows = torch.arange(0, batch, 3)
    gate[rows, rows % classes] = 40.0  # every third sample is confidently flagged
    logits = (torch.randn(views * batch, classes, generator=g) * 3).to(dtype)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return gate.to(DEVICE, dtype), logits.to(DEVICE), labels.to(DEVICE)


def run_both(gate, logits, labels, tau, views, upstream=1.0):
    outputs = []
    for fn in (kernels.masked_cross_entropy, reference.masked_cross_entropy):
        leaf = logits.detach().clone().requires_grad_(True)
        loss, confidence, flagged = fn(gate, leaf, labels, tau, views)
        (loss * upstream).backward()
        outputs.append((loss.detach(), confidence, flagged, leaf.grad))
    return outputs


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("classes", [2, 10, 201, 1000])
@pytest.mark.parametrize("batch", [1, 7, 129])
def test_masked_cross_entropy_matches_reference(triton_path, batch, classes, views, dtype):
    gate, logits, labels = ce_inputs(batch, classes, views, dtype)
    (loss, conf, flags, grad), (r_loss, r_conf, r_flags, r_grad) = run_both(
        gate, logits, labels, 0.9, views
    )
    torch.testing.assert_close(loss, r_loss)
    torch.testing.assert_close(conf, r_conf)
    assert torch.equal(flags, r_flags) and bool(flags[0])
    assert grad.dtype == logits.dtype
    torch.testing.assert_close(grad, r_grad)


@needs_triton
def test_masked_cross_entropy_beyond_one_chunk_of_classes(triton_path):
    """C above the kernel's largest class block loops over chunks."""
    gate, logits, labels = ce_inputs(3, 4099 + 4096, 2, torch.float32)
    (loss, conf, flags, grad), (r_loss, r_conf, r_flags, r_grad) = run_both(
        gate, logits, labels, 0.5, 2, upstream=2.5
    )
    torch.testing.assert_close(loss, r_loss)
    torch.testing.assert_close(conf, r_conf)
    assert torch.equal(flags, r_flags)
    torch.testing.assert_close(grad, r_grad)


@needs_triton
def test_masked_cross_entropy_scales_the_stored_gradient_by_the_upstream_one(triton_path):
    gate, logits, labels = ce_inputs(7, 10, 2, torch.float32)
    (_, _, _, grad), (_, _, _, r_grad) = run_both(gate, logits, labels, 0.9, 2, upstream=-3.0)
    torch.testing.assert_close(grad, r_grad)
    assert grad.abs().max() > 0


@needs_triton
def test_masked_cross_entropy_without_gradient_gives_the_same_values(triton_path):
    gate, logits, labels = ce_inputs(7, 10, 2, torch.float32)
    loss, conf, flags = kernels.masked_cross_entropy(gate, logits, labels, 0.9, 2)
    r_loss, r_conf, r_flags = reference.masked_cross_entropy(gate, logits, labels, 0.9, 2)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, r_loss)
    torch.testing.assert_close(conf, r_conf)
    assert torch.equal(flags, r_flags)


@needs_triton
def test_masked_cross_entropy_propagates_nan_and_inf_like_the_reference(triton_path):
    gate, logits, labels = ce_inputs(6, 5, 2, torch.float32)
    gate[1, 2] = float("nan")  # NaN confidence: never flagged
    gate[2, 0] = float("inf")  # inf - inf: NaN confidence as well
    gate[4, 1] = float("-inf")  # a class the gate rules out: still a valid distribution
    logits[0, 3] = float("-inf")  # a flagged row with a non-finite robust logit
    logits[1, 1] = float("nan")  # an unflagged row with a NaN
    logits[4, 2] = float("-inf")  # an unflagged row with an impossible class
    logits[8, 0] = float("inf")
    labels[4] = 0
    for tau in (0.9, 0.0):
        (loss, conf, flags, grad), (r_loss, r_conf, r_flags, r_grad) = run_both(
            gate, logits, labels, tau, 2
        )
        assert torch.equal(flags, r_flags)
        torch.testing.assert_close(conf, r_conf, equal_nan=True)
        torch.testing.assert_close(loss, r_loss, equal_nan=True)
        torch.testing.assert_close(grad, r_grad, equal_nan=True)
    # Rows without non-finite values keep finite gradients on both paths.
    assert torch.isfinite(grad[3]).all() and torch.isnan(grad[1]).all()


@needs_triton
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["abs", "square"])
@pytest.mark.parametrize("n", [1, 7, 2049, 524_291])  # the last spans CPU slices
def test_accumulate_importance_matches_reference(triton_path, n, mode, grad_dtype):
    g = torch.Generator().manual_seed(n)
    grads = torch.randn(n, generator=g).to(DEVICE, grad_dtype)
    start = torch.rand(n, generator=g).to(DEVICE)
    total, expected = start.clone(), start.clone()
    for step in range(3):
        kernels.accumulate_importance(grads * (step + 1), total, mode, 1 / 3)
        reference.accumulate_importance(grads * (step + 1), expected, mode, 1 / 3)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, expected)


@needs_triton
def test_accumulate_importance_carries_nan_and_inf_like_the_reference(triton_path):
    grads = torch.tensor([1.0, float("nan"), float("-inf"), -2.0], device=DEVICE)
    total, expected = torch.zeros(4, device=DEVICE), torch.zeros(4, device=DEVICE)
    kernels.accumulate_importance(grads, total, "square", 0.5)
    reference.accumulate_importance(grads, expected, "square", 0.5)
    torch.testing.assert_close(total, expected, equal_nan=True)


def importances(n, seed):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, generator=g)
    i_f = torch.rand(n, generator=g) * 4
    i_r = torch.rand(n, generator=g)
    i_f[::5] = 0.0  # I_f = 0: never selected
    i_r[::7] = 0.0  # I_r = 0 < I_f: zeroed
    return theta.to(DEVICE), i_f.to(DEVICE), i_r.to(DEVICE)


@needs_triton
@pytest.mark.parametrize("params_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("alphas", [2.0, [0.5, 1.0, 3.0, 10.0, 0.0]])
@pytest.mark.parametrize("n", [1, 7, 2049, 524_291])  # the last spans CPU slices
def test_dampen_matches_reference(triton_path, n, alphas, params_dtype):
    theta, i_f, i_r = importances(n, n)
    theta = theta.to(params_dtype)
    alpha = alphas if isinstance(alphas, float) else torch.tensor(alphas)
    out = kernels.dampen(theta, i_f, i_r, alpha, 0.8)
    expected = reference.dampen(theta, i_f, i_r, torch.as_tensor(alpha).to(DEVICE), 0.8)
    assert out.shape == expected.shape and out.dtype == params_dtype
    torch.testing.assert_close(out, expected)


@needs_triton
def test_dampen_carries_nan_and_inf_like_the_reference(triton_path):
    theta = torch.tensor([1.0, 2.0, float("nan"), 4.0, 5.0, 6.0], device=DEVICE)
    i_f = torch.tensor([float("inf"), float("nan"), 1.0, float("inf"), 2.0, 0.0], device=DEVICE)
    i_r = torch.tensor([1.0, 1.0, 0.0, float("inf"), float("nan"), 0.0], device=DEVICE)
    alphas = torch.tensor([1.0, -1.0, float("nan")])
    out = kernels.dampen(theta, i_f, i_r, alphas, 1.0)
    expected = reference.dampen(theta, i_f, i_r, alphas.to(DEVICE), 1.0)
    torch.testing.assert_close(out, expected, equal_nan=True)


def test_dispatch_picks_the_reference_off_cuda_unless_the_interpreter_runs(monkeypatch):
    monkeypatch.delenv(kernels.BACKEND_VARIABLE, raising=False)
    expected = "triton" if kernels.INTERPRETER else "reference"
    assert kernels.backend(torch.zeros(1)) == expected
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "reference")
    assert kernels.backend(torch.zeros(1)) == "reference"


def test_dispatch_rejects_unknown_backends(monkeypatch):
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "cuda-please")
    with pytest.raises(ValueError, match="not one of: auto, triton, reference"):
        kernels.backend(torch.zeros(1))


@pytest.mark.skipif(kernels.INTERPRETER, reason="the interpreter runs Triton on the CPU")
def test_forcing_triton_on_cpu_without_the_interpreter_says_why(monkeypatch):
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 exported before Python starts"):
        kernels.dampen(torch.ones(3), torch.ones(3), torch.ones(3), 1.0, 1.0)


def test_masked_cross_entropy_rejects_labels_outside_the_classes():
    # checked on the CPU only: on CUDA a check would synchronise every step (the kernel
    # gives a NaN loss instead, tested below)
    gate, logits, labels = (t.cpu() for t in ce_inputs(4, 10, 2, torch.float32))
    labels[2] = 10
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\); got .*\.\.10"):
        kernels.masked_cross_entropy(gate, logits, labels, 0.9, 2)


def test_importance_buffers_must_be_fp32():
    with pytest.raises(ValueError, match="forget importance must be float32"):
        kernels.dampen(torch.ones(3), torch.ones(3, dtype=torch.float64), torch.ones(3), 1.0, 1.0)


@needs_triton
def test_a_label_outside_the_classes_makes_the_kernel_loss_nan():
    """On CUDA the labels are not checked on the host (that would sync every step)."""
    from ieu_potion.kernels import triton_kernels

    gate, logits, labels = ce_inputs(4, 10, 2, torch.float32)
    labels[1] = 10
    loss, *_ = triton_kernels.masked_cross_entropy_forward(gate, logits, labels, 0.9, 2, True)
    assert torch.isnan(loss)
