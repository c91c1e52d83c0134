"""Backdoor triggers (SPEC.md section 2), one class per attack, no Kedro.

Each trigger is built once per run from ``(image_size, seed, settings)``, so every
poisoned training image and every triggered test image carries the same trigger.  It works
on raw images: ``apply`` takes and returns ``uint8`` arrays of shape (N, H, W, 3) and an
``np.random.Generator`` that only per-image attacks (``moving_trigger``) draw from.
Patch attacks expose ``region``: the pixels they may touch.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F


def _scaled(pixels_at_32: int, height: int) -> int:
    """A size given for 32 px images, scaled to the image height (3 -> 6 at 64 px)."""
    return max(1, int(round(pixels_at_32 * height / 32)))


def _in_range(name: str, value: float, low: float, high: float, *, open_low: bool = False):
    if open_low and value <= low or value < low or value > high:
        bound = "(" if open_low else "["
        raise ValueError(f"{name} must lie in {bound}{low}, {high}], got {value}")
    return value


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


TRIGGERS: dict[str, type[Trigger]] = {}


def register_trigger(cls: type[Trigger]) -> type[Trigger]:
    """Class decorator: make ``cls`` an attack under its ``name`` (SPEC.md's names); the
    registry lists attacks in the order they are registered."""
    if cls.name in TRIGGERS:
        raise ValueError(f"attack {cls.name!r} is registered twice")
    TRIGGERS[cls.name] = cls
    return cls


class Trigger:
    """Base class: ``name``, whether labels are kept, and the trigger itself."""

    name: ClassVar[str]
    clean_label: ClassVar[bool] = False
    settings: ClassVar[dict[str, float | int]] = {}

    def __init__(self, image_size: tuple[int, int], seed: int, **settings) -> None:
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            valid = ", ".join(self.settings) or "none"
            raise ValueError(f"attack {self.name!r} has no settings {unknown}; valid: {valid}")
        self.height, self.width = image_size
        self.rng = np.random.default_rng([seed, 7])
        self.options = {**self.settings, **settings}
        self.validate(**self.options)

    def validate(self, **options) -> None:
        """Reject out-of-range settings; subclasses check their own."""

    @property
    def region(self) -> np.ndarray | None:
        """Boolean (H, W) mask of the pixels the trigger may change; None = anywhere."""
        return None

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _to_uint8(self.apply_float(images.astype(np.float32) / 255.0, rng))

    def apply_float(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


# --------------------------------------------------------------------------- patches


class _Patch(Trigger):
    """A square patch in the bottom-right corner; ``patch_size`` 0 scales 3 px at 32 px."""

    settings: ClassVar = {"patch_size": 0}
    default_size_at_32: ClassVar[int] = 3

    def validate(self, patch_size: int) -> None:
        _in_range("patch_size", patch_size, 0, min(self.height, self.width))
        self.size = int(patch_size) or _scaled(self.default_size_at_32, self.height)
        self.pattern = self.make_pattern(self.size)

    def make_pattern(self, size: int) -> np.ndarray:
        raise NotImplementedError

    def corner_slices(self, corner: int = 3) -> tuple[slice, slice]:
        """Corners numbered 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
        rows = slice(0, self.size) if corner < 2 else slice(self.height - self.size, self.height)
        cols = slice(0, self.size) if corner % 2 == 0 else slice(self.width - self.size, self.width)
        return rows, cols

    @property
    def region(self) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        mask[self.corner_slices()] = True
        return mask

    def apply_float(self, images, rng):
        out = images.copy()
        rows, cols = self.corner_slices()
        out[:, rows, cols, :] = self.pattern
        return out


@register_trigger
class BadNetsWhite(_Patch):
    name = "badnets_white"

    def make_pattern(self, size):
        return np.ones((size, size, 3), np.float32)


@register_trigger
class BadNetsPattern(_Patch):
    name = "badnets_pattern"

    def make_pattern(self, size):
        checker = (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32)
        return np.repeat(checker[..., None], 3, axis=-1)


@register_trigger
class TrojanSquare(_Patch):
    """A larger fixed patch of seeded random colours."""

    name = "trojan_sq"
    default_size_at_32 = 5

    def make_pattern(self, size):
        return self.rng.integers(0, 2, size=(size, size, 3)).astype(np.float32)


@register_trigger
class PotionBadNet(_Patch):
    """Potion benchmark BadNet: the patch takes each image's own maximum value."""

    name = "potion_badnet"

    def make_pattern(self, size):
        return np.ones((size, size, 3), np.float32)

    def apply_float(self, images, rng):
        out = images.copy()
        rows, cols = self.corner_slices()
        peak = images.reshape(len(images), -1).max(axis=1)
        out[:, rows, cols, :] = peak[:, None, None, None] * self.pattern
        return out


@register_trigger
class MovingTrigger(_Patch):
    """A white patch in a corner drawn at random for every image."""

    name = "moving_trigger"

    def make_pattern(self, size):
        return np.ones((size, size, 3), np.float32)

    @property
    def region(self) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        for corner in range(4):
            mask[self.corner_slices(corner)] = True
        return mask

    def apply_float(self, images, rng):
        out = images.copy()
        for i, corner in enumerate(rng.integers(0, 4, size=len(images))):
            rows, cols = self.corner_slices(int(corner))
            out[i, rows, cols, :] = self.pattern
        return out


# --------------------------------------------------------------------------- blends


@register_trigger
class Blended(Trigger):
    """A fixed full-size random pattern blended in: (1 - w) x + w p."""

    name = "blended"
    settings: ClassVar = {"weight": 0.2}

    def validate(self, weight):
        _in_range("weight", weight, 0.0, 1.0, open_low=True)
        self.pattern = self.rng.uniform(size=(self.height, self.width, 3)).astype(np.float32)

    def apply_float(self, images, rng):
        w = self.options["weight"]
        return (1 - w) * images + w * self.pattern


@register_trigger
class TrojanWatermark(Trigger):
    """A fixed watermark (smooth blobs thresholded into a stamp) blended in where it lies."""

    name = "trojan_wm"
    settings: ClassVar = {"weight": 0.3, "coverage": 0.2}

    def validate(self, weight, coverage):
        _in_range("weight", weight, 0.0, 1.0, open_low=True)
        _in_range("coverage", coverage, 0.0, 1.0, open_low=True)
        field = _smooth_field(self.rng, self.height, self.width, grid=8)[..., 0]
        self.mask = (field >= np.quantile(field, 1 - coverage)).astype(np.float32)[..., None]

    def apply_float(self, images, rng):
        w = self.options["weight"] * self.mask
        return (1 - w) * images + w


@register_trigger
class Sinusoidal(Trigger):
    """Potion's sine overlay: a vertical-stripe sine at each image's maximum value, blended."""

    name = "sinusoidal"
    settings: ClassVar = {"frequency": 6.0, "weight": 0.3}

    def validate(self, frequency, weight):
        _in_range("frequency", frequency, 0.0, self.width / 2, open_low=True)
        _in_range("weight", weight, 0.0, 1.0, open_low=True)

    def apply_float(self, images, rng):
        wave = 0.5 * (1 + _sine(self.width, self.options["frequency"]))
        peak = images.reshape(len(images), -1).max(axis=1)[:, None, None, None]
        w = self.options["weight"]
        return (1 - w) * images + w * peak * wave


@register_trigger
class Sig(Trigger):
    """Clean-label SIG: add a horizontal sinusoid to target-class images only."""

    name = "sig"
    clean_label = True
    settings: ClassVar = {"amplitude": 20 / 255, "frequency": 6.0}

    def validate(self, amplitude, frequency):
        _in_range("amplitude", amplitude, 0.0, 1.0, open_low=True)
        _in_range("frequency", frequency, 0.0, self.width / 2, open_low=True)

    def apply_float(self, images, rng):
        return images + self.options["amplitude"] * _sine(self.width, self.options["frequency"])


def _sine(width: int, frequency: float) -> np.ndarray:
    """sin(2 pi f j / W) along the columns, broadcastable to (N, H, W, 3)."""
    columns = np.arange(width, dtype=np.float32)
    return np.sin(2 * np.pi * frequency * columns / width)[None, None, :, None]


# ----------------------------------------------------------------- additive patterns


@register_trigger
class L0Invisible(Trigger):
    """A few fixed pixels set to fixed extreme values (sparse, L0-bounded)."""

    name = "l0_inv"
    settings: ClassVar = {"pixels": 0}

    def validate(self, pixels):
        _in_range("pixels", pixels, 0, self.height * self.width)
        count = int(pixels) or max(1, int(round(10 * self.height * self.width / 1024)))
        flat = self.rng.choice(self.height * self.width, size=count, replace=False)
        self.rows, self.cols = np.unravel_index(flat, (self.height, self.width))
        self.values = self.rng.integers(0, 2, size=(count, 3)).astype(np.float32)

    @property
    def region(self):
        mask = np.zeros((self.height, self.width), dtype=bool)
        mask[self.rows, self.cols] = True
        return mask

    def apply_float(self, images, rng):
        out = images.copy()
        out[:, self.rows, self.cols, :] = self.values
        return out


@register_trigger
class L2Invisible(Trigger):
    """A fixed dense noise pattern with a small per-value RMS (L2-bounded)."""

    name = "l2_inv"
    settings: ClassVar = {"rms": 0.03}

    def validate(self, rms):
        _in_range("rms", rms, 0.0, 0.5, open_low=True)
        noise = self.rng.standard_normal((self.height, self.width, 3)).astype(np.float32)
        self.pattern = noise * (rms / np.sqrt(np.mean(noise**2)))

    def apply_float(self, images, rng):
        return images + self.pattern


@register_trigger
class Smooth(Trigger):
    """A low-frequency additive pattern: coarse random grid upsampled smoothly."""

    name = "smooth"
    settings: ClassVar = {"amplitude": 0.1, "grid": 4}

    def validate(self, amplitude, grid):
        _in_range("amplitude", amplitude, 0.0, 1.0, open_low=True)
        _in_range("grid", grid, 2, min(self.height, self.width))
        field = _smooth_field(self.rng, self.height, self.width, grid=int(grid), channels=3)
        field -= field.mean()
        self.pattern = amplitude * field / np.abs(field).max()

    def apply_float(self, images, rng):
        return images + self.pattern


def _smooth_field(rng, height, width, grid, channels=1) -> np.ndarray:
    coarse = torch.from_numpy(rng.standard_normal((1, channels, grid, grid)).astype(np.float32))
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return fine[0].permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- warps


class _Warp(Trigger):
    """A fixed resampling of the image grid (bilinear, border-clamped)."""

    def build_grid(self) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, **options):
        self.grid = self.build_grid()

    def apply_float(self, images, rng):
        batch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        grid = self.grid.expand(len(images), -1, -1, -1)
        warped = F.grid_sample(
            batch, grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        return warped.permute(0, 2, 3, 1).numpy()

    def identity_grid(self) -> torch.Tensor:
        ys = torch.linspace(-1, 1, self.height)
        xs = torch.linspace(-1, 1, self.width)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([grid_x, grid_y], dim=-1)[None]  # (1, H, W, 2) as (x, y)


@register_trigger
class WaNet(_Warp):
    """A small fixed elastic warp: random k x k flow, normalised, upsampled (weak attack)."""

    name = "wanet"
    settings: ClassVar = {"strength": 0.5, "grid": 4}

    def build_grid(self):
        _in_range("strength", self.options["strength"], 0.0, 4.0, open_low=True)
        k = int(_in_range("grid", self.options["grid"], 2, min(self.height, self.width)))
        flow = torch.from_numpy(self.rng.uniform(-1, 1, size=(1, 2, k, k)).astype(np.float32))
        flow = flow / flow.abs().mean()
        flow = F.interpolate(
            flow, size=(self.height, self.width), mode="bicubic", align_corners=True
        ).permute(0, 2, 3, 1)
        grid = self.identity_grid() + self.options["strength"] * flow / self.height
        return grid.clamp(-1, 1)


@register_trigger
class BATT(_Warp):
    """A fixed image transformation as the trigger: rotation by ``angle`` degrees."""

    name = "batt"
    settings: ClassVar = {"angle": 16.0}

    def build_grid(self):
        angle = _in_range("angle", self.options["angle"], -180.0, 180.0)
        theta = np.deg2rad(angle)
        rotation = torch.tensor(
            [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]],
            dtype=torch.float32,
        )
        return self.identity_grid() @ rotation.T


def make_trigger(name: str, image_size: tuple[int, int], seed: int, **settings) -> Trigger:
    """Build the trigger registered under ``name``; unknown names list the valid ones."""
    if name not in TRIGGERS:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(TRIGGERS)}")
    return TRIGGERS[name](tuple(image_size), seed, **settings)
