"""Backdoor triggers (docs/methods.md section 2), one class per attack, no Kedro.

Each trigger is built once per run from ``(image_size, seed, settings)``, so every
poisoned training image and every triggered test image carries the same trigger.  It works
on raw images: ``apply`` takes and returns ``uint8`` arrays of shape (N, H, W, 3) and an
``np.random.Generator`` that only per-image attacks (``moving_trigger``) draw from.
Patch attacks expose ``region``: the pixels they may touch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ieu_potion.attacks.stega import StegaCodec, encode_images


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
    """Class decorator: make ``cls`` an attack under its ``name`` (docs/methods.md's names); the
    registry lists attacks in the order they are registered."""
    if cls.name in TRIGGERS:
        raise ValueError(f"attack {cls.name!r} is registered twice")
    TRIGGERS[cls.name] = cls
    return cls


def _setting_kind(default: Any, value: Any) -> str:
    """What a trigger setting must be, judged by its default ("" where ``value`` is fine):
    an integer for an integer default, a finite number for a real one, a boolean for a
    boolean one."""
    if isinstance(default, bool):
        return "" if isinstance(value, bool) else "true or false"
    if isinstance(value, bool):
        return "a number"
    if isinstance(default, int):
        return "" if isinstance(value, int) else "an integer"
    if isinstance(default, float):
        numeric = isinstance(value, int | float) and math.isfinite(value)
        return "" if numeric else "a finite number"
    return ""


class Trigger:
    """Base class: ``name``, whether labels are kept, and the trigger itself."""

    name: ClassVar[str]
    clean_label: ClassVar[bool] = False
    settings: ClassVar[dict[str, float | int]] = {}
    # Triggers that hide a code with ISSBA's steganography codec (attacks/stega.py).
    needs_codec: ClassVar[bool] = False
    # Non-empty where the trigger stands in for an optimised one of its paper: what differs
    # (shown in docs/attacks.md and the gallery's caption).
    approximation: ClassVar[str] = ""
    # Where the trigger meets the training augmentation by default (an attack's ``stamp``
    # setting overrides it): "before", stamped on the stored image (BackdoorBench's
    # attacks), or "after", on every augmented view (triggers with an ``overlay`` only).
    stamp: ClassVar[str] = "before"

    def __init__(self, image_size: tuple[int, int], seed: int, **settings) -> None:
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            valid = ", ".join(self.settings) or "none"
            raise ValueError(f"attack {self.name!r} has no settings {unknown}; valid: {valid}")
        for key, value in settings.items():
            kind = _setting_kind(self.settings[key], value)
            if kind:
                raise ValueError(
                    f"attack {self.name!r}: setting {key} must be {kind}, got {value!r}"
                )
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

    def transform_clean(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """What the attack does to the training images it leaves unpoisoned (uint8 in and
        out); None: nothing."""
        return None

    def overlay(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(alpha, pattern)`` where the trigger is one fixed blend ``(1 - alpha) x + alpha
        pattern`` of every image (alpha (H, W, 1), pattern (H, W, 3), floats in [0, 1]):
        such a trigger can be stamped after the training augmentation.  None: it depends
        on the image or on a per-image draw."""
        return None

    def overlays(
        self, count: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The blends that ``apply`` makes of ``count`` images with ``rng`` (the same draws):
        the one fixed ``overlay``, or one per image (alpha (count, H, W, 1), pattern
        (count, H, W, 3)) for a trigger drawn per image that is still a blend.  None: no
        blend, so the trigger cannot be stamped after the augmentation."""
        return self.overlay()


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

    def overlay(self):
        alpha = np.zeros((self.height, self.width, 1), np.float32)
        pattern = np.zeros((self.height, self.width, 3), np.float32)
        rows, cols = self.corner_slices()
        alpha[rows, cols] = 1.0
        pattern[rows, cols] = self.pattern
        return alpha, pattern


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
    approximation = (
        "TrojanNN optimises the square's pixels to excite chosen neurons of the model "
        "(the I-BAU/NAD benchmarks load that optimised patch from a file); here a fixed "
        "seeded random-colour square."
    )
    default_size_at_32 = 5

    def make_pattern(self, size):
        return self.rng.integers(0, 2, size=(size, size, 3)).astype(np.float32)


@register_trigger
class PotionBadNet(_Patch):
    """Potion benchmark BadNet: the patch takes the data set's maximum value (white, the
    benchmark's), or with ``own_maximum`` 1 each image's own maximum."""

    name = "potion_badnet"
    settings: ClassVar = {"patch_size": 0, "own_maximum": 0}
    stamp = "after"  # the Potion benchmark's code stamps it on the augmented image

    def validate(self, patch_size: int, own_maximum: int) -> None:
        if own_maximum not in (0, 1):
            raise ValueError(f"own_maximum must be 0 or 1, got {own_maximum}")
        super().validate(patch_size)

    def make_pattern(self, size):
        return np.ones((size, size, 3), np.float32)

    def apply_float(self, images, rng):
        out = images.copy()
        rows, cols = self.corner_slices()
        peak = images.reshape(len(images), -1).max(axis=1) if self.options["own_maximum"] else 1.0
        out[:, rows, cols, :] = np.reshape(peak, (-1, 1, 1, 1)) * self.pattern
        return out

    def overlay(self):
        return None if self.options["own_maximum"] else super().overlay()


@register_trigger
class MovingTrigger(_Patch):
    """A white patch in a corner drawn at random for every image."""

    name = "moving_trigger"
    # Potion's attack, stamped as its benchmark stamps poison: after the augmentation, so
    # a shift never pushes the 3 px patch out of its corner
    stamp = "after"

    def make_pattern(self, size):
        return np.ones((size, size, 3), np.float32)

    @property
    def region(self) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        for corner in range(4):
            mask[self.corner_slices(corner)] = True
        return mask

    def apply_float(self, images, rng):
        alpha, pattern = self.overlays(len(images), rng)
        return (1 - alpha) * images + alpha * pattern

    def overlays(self, count, rng):
        alpha = np.zeros((count, self.height, self.width, 1), np.float32)
        pattern = np.zeros((count, self.height, self.width, 3), np.float32)
        for i, corner in enumerate(rng.integers(0, 4, size=count)):
            rows, cols = self.corner_slices(int(corner))
            alpha[i, rows, cols] = 1.0
            pattern[i, rows, cols] = self.pattern
        return alpha, pattern


# --------------------------------------------------------------------------- blends


@register_trigger
class Blended(Trigger):
    """A fixed full-size random pattern blended in: (1 - w) x + w p."""

    name = "blended"
    approximation = (
        "Chen et al. (2017) blend a fixed photograph (Hello Kitty in the benchmarks), an "
        "asset not shipped here; here a seeded uniform-noise image."
    )
    settings: ClassVar = {"weight": 0.2}

    def validate(self, weight):
        _in_range("weight", weight, 0.0, 1.0, open_low=True)
        self.pattern = self.rng.uniform(size=(self.height, self.width, 3)).astype(np.float32)

    def apply_float(self, images, rng):
        w = self.options["weight"]
        return (1 - w) * images + w * self.pattern

    def overlay(self):
        alpha = np.full((self.height, self.width, 1), self.options["weight"], np.float32)
        return alpha, self.pattern


@register_trigger
class TrojanWatermark(Trigger):
    """A fixed watermark (smooth blobs thresholded into a stamp) blended in where it lies."""

    name = "trojan_wm"
    approximation = (
        "TrojanNN optimises the watermark's pixels to excite chosen neurons (the "
        "benchmarks load an optimised watermark from a file); here a fixed seeded stamp "
        "blended towards white."
    )
    settings: ClassVar = {"weight": 0.3, "coverage": 0.2}

    def validate(self, weight, coverage):
        _in_range("weight", weight, 0.0, 1.0, open_low=True)
        _in_range("coverage", coverage, 0.0, 1.0, open_low=True)
        field = _smooth_field(self.rng, self.height, self.width, grid=8)[..., 0]
        self.mask = (field >= np.quantile(field, 1 - coverage)).astype(np.float32)[..., None]

    def apply_float(self, images, rng):
        w = self.options["weight"] * self.mask
        return (1 - w) * images + w

    def overlay(self):
        return self.options["weight"] * self.mask, np.ones((self.height, self.width, 3), np.float32)


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
    approximation = (
        "Li et al. (2020) optimise a sparse, L0-regularised perturbation (the benchmarks "
        "load it from a file); here fixed seeded pixels set to 0 or 255."
    )
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
    approximation = (
        "Li et al. (2020) optimise a dense, L2-regularised perturbation (the benchmarks "
        "load it from a file); here a fixed seeded Gaussian pattern at a given RMS."
    )
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
    approximation = (
        "Zeng et al. (ICCV 2021) optimise a low-frequency trigger (the benchmarks load "
        "it from a file); here a seeded random low-frequency field."
    )
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
    """A fixed resampling of the image grid (bilinear; outside pixels repeat the border,
    or are black with ``padding`` "zeros")."""

    padding: ClassVar[str] = "border"

    def build_grid(self) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, **options):
        self.grid = self.build_grid()

    def apply_float(self, images, rng):
        return self.resample(images, self.grid.expand(len(images), -1, -1, -1))

    def resample(self, images: np.ndarray, grid: torch.Tensor) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        warped = F.grid_sample(
            batch, grid, mode="bilinear", padding_mode=self.padding, align_corners=True
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
    """A fixed image transformation as the trigger: rotation by ``angle`` degrees, corners
    black.  As in the authors' code, every clean training image is rotated too, by an angle
    drawn from U(-clean_angle, clean_angle), so that rotation alone is no tell."""

    name = "batt"
    settings: ClassVar = {"angle": 16.0, "clean_angle": 10.0}
    padding = "zeros"

    def build_grid(self):
        angle = _in_range("angle", self.options["angle"], -180.0, 180.0)
        _in_range("clean_angle", self.options["clean_angle"], 0.0, 180.0)
        return self.rotation_grid(np.array([angle]))

    def rotation_grid(self, degrees: np.ndarray) -> torch.Tensor:
        """(N, H, W, 2) sampling grids rotating by each of ``degrees``."""
        theta = torch.from_numpy(np.deg2rad(np.asarray(degrees, dtype=np.float32)))
        cos, sin = theta.cos(), theta.sin()
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        return torch.einsum("hwj,nij->nhwi", self.identity_grid()[0], rotation)

    def transform_clean(self, images, rng):
        spread = self.options["clean_angle"]
        if spread == 0 or len(images) == 0:
            return None
        degrees = rng.uniform(-spread, spread, size=len(images))
        out = np.empty_like(images)
        for start in range(0, len(images), 512):
            part = images[start : start + 512].astype(np.float32) / 255.0
            out[start : start + 512] = _to_uint8(
                self.resample(part, self.rotation_grid(degrees[start : start + 512]))
            )
        return out


# ------------------------------------------------------------------ sample-specific


@register_trigger
class ISSBA(Trigger):
    """Invisible sample-specific residuals: the trained encoder hides one fixed secret bit
    string (drawn with the attack's seed) in every image; the residual differs per image."""

    name = "issba"
    needs_codec = True

    def attach(self, codec: StegaCodec) -> None:
        codec.check_size((self.height, self.width))
        self.codec = codec
        self.secret = self.rng.integers(0, 2, codec.config.bits).astype(np.uint8)

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not hasattr(self, "codec"):
            raise ValueError(
                "issba needs the steganography codec (the stega_codec artifact that "
                "data_poisoning trains); pass it with codec="
            )
        return encode_images(self.codec, images, self.secret)


def make_trigger(
    name: str,
    image_size: tuple[int, int],
    seed: int,
    codec: StegaCodec | None = None,
    **settings,
) -> Trigger:
    """Build the trigger registered under ``name``; unknown names list the valid ones.
    ``codec`` is the trained steganography codec, used by triggers that need one."""
    if name not in TRIGGERS:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(TRIGGERS)}")
    trigger = TRIGGERS[name](tuple(image_size), seed, **settings)
    if codec is not None and trigger.needs_codec:
        trigger.attach(codec)
    return trigger
