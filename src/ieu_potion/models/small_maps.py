"""Convolutions whose output is a few pixels: the weight gradient as one matrix product.

At the default's 32 px a ResNet's last stage works on 2x2 and 1x1 feature maps.  oneDNN,
torch's CPU convolution backend, computes the weight gradient of such a layer about ten
times slower than the plain matrix product it amounts to (docs/benchmarks.md: the 3x3
convolution on resnet10t's 1x1 map took a third of a training step).  ``SmallMapConv2d``
keeps torch's forward and input gradient and computes the weight gradient as
``grad_output^T @ unfold(input)`` where the output has at most ``SMALL_MAP`` positions
per image and the weight lives on the CPU; elsewhere it is ``nn.Conv2d`` unchanged.  The
backward is itself differentiable (I-BAU differentiates through gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Output positions per image (H_out * W_out) at or below which the matrix product is used:
# measured on resnet10t at 32 px, it wins from 4 positions down and loses at 16.
SMALL_MAP = 4


class _SmallMapConv(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation):
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, padding, dilation = inputs
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            cols = F.unfold(x, weight.shape[2:], dilation, padding, stride)  # (N, C*k*k, L)
            n, out_channels = grad.shape[:2]
            rows = grad.reshape(n, out_channels, -1).permute(1, 0, 2).reshape(out_channels, -1)
            grad_w = (rows @ cols.permute(0, 2, 1).reshape(rows.shape[1], -1)).view_as(weight)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight gradient on small CPU feature maps is a matrix product."""

    def _conv_forward(self, input, weight, bias):
        if self._small_map(input, weight):
            return _SmallMapConv.apply(
                input, weight, bias, self.stride, self.padding, self.dilation
            )
        return super()._conv_forward(input, weight, bias)

    def _small_map(self, input, weight) -> bool:
        if not (weight.requires_grad and torch.is_grad_enabled() and weight.device.type == "cpu"):
            return False
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return False
        positions = 1
        for side, k, s, p, d in zip(
            input.shape[2:],
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            strict=True,
        ):
            positions *= (side + 2 * p - d * (k - 1) - 1) // s + 1
        return positions <= SMALL_MAP


def use_small_map_convolutions(model: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` of ``model`` into a ``SmallMapConv2d`` in place (same
    parameters, state dict and forward values); returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = SmallMapConv2d
    return model
