"""Small-map convolutions: torch's forward and input gradient, the weight gradient as a
matrix product, checked against ``nn.Conv2d`` on odd shapes, twice differentiable."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from ieu_potion.models import ModelSpec, build_model
from ieu_potion.models.small_maps import SMALL_MAP, SmallMapConv2d, use_small_map_convolutions

# (in channels, out channels, kernel, stride, padding, dilation, bias, input H, W)
GEOMETRIES = [
    (5, 7, 3, 1, 1, 1, True, 1, 1),  # 3x3 on a 1x1 map: the case it exists for
    (6, 4, 3, 2, 1, 1, False, 3, 4),  # strided, odd sides: 2x2 out
    (3, 5, (1, 3), 1, (0, 1), 1, True, 1, 3),  # rectangular kernel, 1x3 out
    (4, 3, 3, 1, 2, 2, True, 2, 2),  # dilated: 2x2 out
    (2, 3, 1, 1, 0, 1, False, 2, 1),  # pointwise
]


def pair(geometry, dtype=torch.float32):
    c_in, c_out, k, stride, padding, dilation, bias, h, w = geometry
    torch.manual_seed(0)
    plain = nn.Conv2d(c_in, c_out, k, stride, padding, dilation, bias=bias).to(dtype)
    small = use_small_map_convolutions(copy.deepcopy(nn.Sequential(plain)))[0]
    x = torch.randn(3, c_in, h, w, dtype=dtype, requires_grad=True)
    return plain, small, x


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_gradients_match_the_plain_convolution(geometry):
    plain, small, x = pair(geometry)
    assert type(small) is SmallMapConv2d and small._small_map(x, small.weight)
    out_plain, out_small = plain(x), small(x)
    assert torch.equal(out_plain, out_small)
    weights = torch.randn_like(out_plain)
    grads_plain = torch.autograd.grad((out_plain * weights).sum(), [x, *plain.parameters()])
    grads_small = torch.autograd.grad((out_small * weights).sum(), [x, *small.parameters()])
    assert torch.equal(grads_plain[0], grads_small[0])  # input gradient: torch's own
    for a, b in zip(grads_plain[1:], grads_small[1:], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("geometry", GEOMETRIES[:2])
def test_backward_is_differentiable(geometry):
    _, small, x = pair(geometry, torch.float64)
    params = [x, small.weight] + ([small.bias] if small.bias is not None else [])

    def conv(x, weight, bias=None):
        return small._conv_forward(x, weight, bias)

    assert torch.autograd.gradcheck(conv, tuple(params))
    assert torch.autograd.gradgradcheck(conv, tuple(params))


def test_plain_path_where_the_map_is_large_or_no_weight_gradient_is_asked():
    _, small, _ = pair((3, 4, 3, 1, 1, 1, True, 1, 1))
    side = int(SMALL_MAP**0.5) + 1  # one row more than the threshold allows
    assert not small._small_map(torch.randn(1, 3, side, side), small.weight)
    assert small._small_map(torch.randn(1, 3, 2, 2), small.weight)
    with torch.no_grad():
        assert not small._small_map(torch.randn(1, 3, 1, 1), small.weight)
    small.weight.requires_grad_(False)
    assert not small._small_map(torch.randn(1, 3, 1, 1), small.weight)


def test_grouped_convolutions_stay_plain():
    grouped = use_small_map_convolutions(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2)))
    assert not grouped[0]._small_map(torch.randn(1, 4, 1, 1), grouped[0].weight)


def test_built_models_are_channels_last_and_train_as_timm_does_with_the_same_state_dict():
    spec = ModelSpec("resnet10t", 10, image_size=32)
    model = build_model(spec)
    assert any(type(m) is SmallMapConv2d for m in model.modules())
    weights = [p for p in model.parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    reference = timm.create_model("resnet10t", num_classes=10)
    reference.load_state_dict(model.state_dict())
    assert list(reference.state_dict()) == list(model.state_dict())
    # In float32 the two layouts sum in different orders, and the first convolution's
    # gradient (a sum over every pixel of the batch) then differs by more than any fixed
    # rtol in some draws; in float64 the rounding is far below the tolerance.
    model, reference = model.double(), reference.double()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model(x).square().mean().backward()
    reference(x).square().mean().backward()
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12, msg=name)
