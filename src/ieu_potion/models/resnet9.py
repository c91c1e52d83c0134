"""ResNet-9, the small residual network of the Potion paper's benchmark (Goel et al.'s
corrective-unlearning code, which the paper follows), built from timm's layers and
registered with timm as ``resnet9``, so a spec names it like any timm model.

The layout is the benchmark's: a 3x3 convolution at full resolution, a 5x5 convolution
of stride 2, a residual pair of 3x3 convolutions, a 3x3 convolution and a 2x2 max-pool, a
second residual pair, an unpadded 3x3 convolution that narrows the channels, a global
max-pool and a linear layer without bias; every convolution is followed by batch norm and
a CELU (alpha 0.075).  ``widths`` gives the four channel counts (the benchmark's: 64, 128,
256, 128), so a CPU run can use a narrower copy.  Unlike timm's ImageNet ResNets, nothing
strides before the second convolution: at 32 px a 3x3 patch still covers nine positions
of the first feature map.  Departure: the convolutions have no bias (each is followed by
batch norm, which cancels one).  There are no pretrained weights: it is trained from
scratch.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ConvNormAct
from timm.models import register_model
from torch import nn

WIDTHS = (64, 128, 256, 128)
CELU_ALPHA = 0.075


def _conv(
    channels_in: int, channels_out: int, kernel: int = 3, stride: int = 1, padding: int = 1
) -> ConvNormAct:
    return ConvNormAct(
        channels_in,
        channels_out,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        act_layer=nn.CELU,
        act_kwargs={"alpha": CELU_ALPHA},
    )


class _Residual(nn.Module):
    """x + two 3x3 convolutions of x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv(channels, channels), _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(x)


class ResNet9(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int, int] | list[int] = WIDTHS,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or any(int(w) != w or w < 1 for w in widths):
            raise ValueError(f"resnet9 widths must be four positive integers, got {widths}")
        stem, first, second, last = (int(w) for w in widths)
        self.num_classes = num_classes
        self.num_features = last
        self.drop_rate = drop_rate
        self.stem = _conv(in_chans, stem)
        self.stages = nn.Sequential(
            nn.Sequential(_conv(stem, first, kernel=5, stride=2, padding=2), _Residual(first)),
            nn.Sequential(_conv(first, second), nn.MaxPool2d(2), _Residual(second)),
            _conv(second, last, padding=0),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = self._head(num_classes)

    def _head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes, bias=False)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = self._head(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def resnet9(pretrained: bool = False, **kwargs: Any) -> ResNet9:
    """ResNet-9 from random weights (timm's factory arguments other than the model's own
    are accepted and unused: there is no pretrained configuration to overlay)."""
    if pretrained:
        raise ValueError(
            "resnet9 has no pretrained weights to fetch; give model.weights.source 'scratch', "
            "'pretrain' or 'checkpoint'"
        )
    for unused in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(unused, None)
    model = ResNet9(**kwargs)
    model.pretrained_cfg = {
        "input_size": (3, 32, 32),
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "num_classes": model.num_classes,
    }
    model.default_cfg = model.pretrained_cfg
    return model
