"""The three training views of docs/methods.md section 3, computed batch-wise on the device.

Input: ``uint8`` images (B, H, W, 3) with the trigger applied (and, for a trigger stamped
after the augmentation, the batch's ``BatchStamp``).  Output: normalised float tensors
(B, 3, h, w) at the model's input size.

- ``plain``: resize + normalise;
- ``clean``: RandomResizedCrop (scale 0.75-1, ratio 3/4-4/3), a shift of up to
  ``translate`` pixels (0 here; 4 with scale 1 is CIFAR's pad-4 random crop, zeros
  shifted in) and horizontal flip 0.5 as one affine resampling, ColorJitter(0.4, 0.4,
  0.2, 0.1) with p 0.8 (brightness, contrast, saturation, hue in that order; hue as a
  rotation of the YIQ chroma plane), grayscale 0.2; a trigger stamped after the
  augmentation (``data.imageset.Overlay``) is blended in last, at the view's size;
- ``corrupted``: the clean view with random rectangles (sides up to 30% of H and W) filled
  with N(0, 1) noise or zeros, in normalised space, until a U(0.05, 0.3) share of the
  pixels is covered.

The probabilities and ranges are fields (a training config's ``augment`` block sets them:
flips, for instance, make no sense for digits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ieu_potion.data.imageset import BatchStamp

VIEWS = ("plain", "clean", "corrupted")

_GRAY = torch.tensor([0.299, 0.587, 0.114])
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass(frozen=True)
class ViewMaker:
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_scale: tuple[float, float] = (0.75, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    translate: int = 0  # pixels at the view's size, each way
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    corrupt_cover: tuple[float, float] = (0.05, 0.3)
    corrupt_side: float = 0.3

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not isinstance(self.translate, int) or not 0 <= self.translate < min(self.size):
            raise ValueError(
                f"translate must be a whole number of pixels in [0, {min(self.size) - 1}], "
                f"got {self.translate!r}"
            )
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        low, high = self.corrupt_cover
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"corrupt_cover must satisfy 0 <= low <= high < 1, got {low, high}")

    def __call__(
        self,
        images: torch.Tensor,
        names: tuple[str, ...],
        generator: torch.Generator,
        stamp: BatchStamp | None = None,
    ) -> dict[str, torch.Tensor]:
        """The views ``names`` of ``images``; ``stamp``: the batch's trigger to stamp after
        the augmentation (the plain view keeps the stored, stamped images)."""
        unknown = set(names) - set(VIEWS)
        if unknown:
            raise ValueError(f"unknown views {sorted(unknown)}; valid: {', '.join(VIEWS)}")
        x = _unit(images)
        out = {}
        if "plain" in names:
            out["plain"] = self.normalise(self.resize(x))
        if "clean" in names or "corrupted" in names:
            stamped = None
            if stamp is not None and stamp.stamped.any():
                stamped = torch.from_numpy(stamp.stamped).to(x.device)
                x = x.clone()
                x[stamped] = _unit(torch.from_numpy(stamp.originals).to(x.device))
            augmented = self.colour(self.crop(x, generator), generator)
            if stamped is not None:
                augmented[stamped] = self.stamp(augmented[stamped], stamp)
            clean = self.normalise(augmented)
            if "clean" in names:
                out["clean"] = clean
            if "corrupted" in names:
                out["corrupted"] = self.corrupt(clean, generator)
        return out

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(
            x, size=self.size, mode="bilinear", align_corners=False, antialias=True
        )

    def stamp(self, x: torch.Tensor, stamp: BatchStamp) -> torch.Tensor:
        """``(1 - alpha) x + alpha pattern`` with the overlay (one for the batch, or one
        per stamped sample) brought to the view's size (nearest neighbour: a patch stays a
        patch)."""
        alpha, pattern = (_channels_first(a).to(x.device) for a in (stamp.alpha, stamp.pattern))
        if tuple(alpha.shape[-2:]) != self.size:
            alpha = F.interpolate(alpha, size=self.size, mode="nearest")
            pattern = F.interpolate(pattern, size=self.size, mode="nearest")
        return (1 - alpha) * x + alpha * pattern

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        area = _uniform(b, *self.crop_scale, g)
        log_ratio = _uniform(b, math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), g)
        ratio = log_ratio.exp()
        width = (area * ratio).sqrt().clamp(max=1.0)
        height = (area / ratio).sqrt().clamp(max=1.0)
        cx = _uniform(b, -1.0, 1.0, g) * (1 - width)
        cy = _uniform(b, -1.0, 1.0, g) * (1 - height)
        if self.translate:  # whole pixels of the output, 2 / side in grid units
            shift = torch.randint(-self.translate, self.translate + 1, (2, b), generator=g)
            cx = cx + shift[0] * 2.0 / self.size[1]
            cy = cy + shift[1] * 2.0 / self.size[0]
        flip = torch.where(torch.rand(b, generator=g) < self.flip_p, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = width * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = height
        theta[:, 1, 2] = cy
        theta = theta.to(x.device)
        grid = F.affine_grid(theta, [b, 3, *self.size], align_corners=False)
        # a shift brings in zeros (a padded crop); otherwise the border is reflected
        padding = "zeros" if self.translate else "reflection"
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)

    def colour(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        brightness, contrast, saturation, hue = self.jitter
        apply = (torch.rand(b, generator=g) < self.jitter_p).float()

        def factor(spread):
            return (1 + apply * _uniform(b, -spread, spread, g)).view(b, 1, 1, 1).to(x.device)

        gray_w = _GRAY.to(x.device).view(1, 3, 1, 1)
        x = (x * factor(brightness)).clamp(0, 1)
        mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = ((x - mean) * factor(contrast) + mean).clamp(0, 1)
        gray = (x * gray_w).sum(1, keepdim=True)
        x = ((x - gray) * factor(saturation) + gray).clamp(0, 1)
        angle = (apply * _uniform(b, -hue, hue, g) * 2 * math.pi).to(x.device)
        x = _rotate_hue(x, angle).clamp(0, 1)
        to_gray = (torch.rand(b, generator=g) < self.grayscale_p).to(x.device).view(b, 1, 1, 1)
        gray = (x * gray_w).sum(1, keepdim=True).expand_as(x)
        return torch.where(to_gray, gray, x)

    def corrupt(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Rectangles of noise or black over each image until ``corrupt_cover`` of it is
        covered.  The draws are torch's, one after the other from ``g``; the coverage is
        counted and the rectangles painted in NumPy on a CPU copy (one transfer each way
        on a GPU), which gives the same result as torch's own indexing at a fraction of
        the cost (tests/training/test_engine.py checks it against a torch loop)."""
        b, _, h, w = x.shape
        out = x.detach().cpu().clone()
        pixels = out.numpy()
        targets = _uniform(b, *self.corrupt_cover, g).numpy()
        max_h = max(1, int(self.corrupt_side * h))
        max_w = max(1, int(self.corrupt_side * w))
        area = np.float32(h * w)
        for i in range(b):
            covered = np.zeros((h, w), dtype=bool)
            count = 0
            while np.float32(count) / area < targets[i]:
                rh = int(torch.randint(1, max_h + 1, (1,), generator=g))
                rw = int(torch.randint(1, max_w + 1, (1,), generator=g))
                top = int(torch.randint(0, h - rh + 1, (1,), generator=g))
                left = int(torch.randint(0, w - rw + 1, (1,), generator=g))
                patch = covered[top : top + rh, left : left + rw]
                count += patch.size - int(np.count_nonzero(patch))
                patch[...] = True
                rows, cols = slice(top, top + rh), slice(left, left + rw)
                if float(torch.rand(1, generator=g)) < 0.5:
                    pixels[i, :, rows, cols] = torch.randn(3, rh, rw, generator=g).numpy()
                else:
                    pixels[i, :, rows, cols] = 0.0
        return out.to(x.device)


def _channels_first(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (N, H, W, C) -> (1 or N, C, H, W)."""
    t = torch.from_numpy(array)
    return t.permute(2, 0, 1)[None] if t.ndim == 3 else t.permute(0, 3, 1, 2)


def _unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) to float (B, 3, H, W) in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma (I, Q) plane of YIQ by ``angle`` radians per image."""
    to_yiq = _RGB_TO_YIQ.to(x.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)
