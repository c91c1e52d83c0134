import pytest
import torch

from ieu_potion.kernels import accumulate_importance, dampen


def test_dampening_follows_the_ssd_rule_on_hand_made_tensors():
    theta = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, -6.0])
    i_f = torch.tensor([1.0, 5.0, 2.0, 0.0, 3.0, 8.0])
    i_r = torch.tensor([1.0, 1.0, 0.0, 0.0, 2.0, 2.0])
    out = dampen(theta, i_f, i_r, alpha=2.0, lam=1.0)
    # 0: 1 > 2 no; 1: 5 > 2 yes -> x min(1/5, 1); 2: I_r = 0 < I_f -> 0; 3: 0 > 0 no;
    # 4: 3 > 4 no; 5: 8 > 4 yes -> x 2/8
    torch.testing.assert_close(out, torch.tensor([1.0, 0.4, 0.0, 4.0, 5.0, -1.5]))
    torch.testing.assert_close(theta, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, -6.0]))


def test_lambda_caps_the_factor_at_one():
    out = dampen(torch.ones(2), torch.tensor([4.0, 4.0]), torch.tensor([1.0, 3.0]), 0.5, lam=2.0)
    torch.testing.assert_close(out, torch.tensor([0.5, 1.0]))


def test_batched_alphas_equal_one_call_per_alpha():
    g = torch.Generator().manual_seed(0)
    theta, i_f, i_r = (torch.rand(101, generator=g) for _ in range(3))
    alphas = torch.tensor([0.5, 1.0, 3.0])
    batched = dampen(theta, i_f, i_r, alphas, 1.0)
    assert batched.shape == (3, 101)
    for k, a in enumerate(alphas):
        torch.testing.assert_close(batched[k], dampen(theta, i_f, i_r, float(a), 1.0))


@pytest.mark.parametrize("mode, expected", [("abs", [0.5, 1.0, 1.5]), ("square", [0.5, 2.0, 4.5])])
def test_importance_accumulates_in_fp32_whatever_the_gradient_dtype(mode, expected):
    total = torch.zeros(3)
    grads = torch.tensor([1.0, -2.0, 3.0], dtype=torch.bfloat16)
    accumulate_importance(grads, total, mode, 0.5)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, torch.tensor(expected))


def test_importance_rejects_unknown_modes_and_shapes():
    with pytest.raises(ValueError, match="unknown importance mode 'cube'"):
        accumulate_importance(torch.zeros(2), torch.zeros(2), "cube", 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        accumulate_importance(torch.zeros(2), torch.zeros(3), "abs", 1.0)
