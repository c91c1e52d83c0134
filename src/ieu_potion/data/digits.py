"""The embedded default data: scikit-learn digits, plain or cluttered over photographs.

Everything here is built from data that ships inside installed packages (scikit-learn's
8x8 digits and the photographs bundled with scikit-image), so the default run needs no
download.  The cluttered variant follows the MNIST-M idea: each digit is coloured,
scaled, rotated, shifted and composited over a random crop of a real photograph, which
makes the clean task hard for a one-block ViT (docs/data.md, "Why cluttered digits").

Train and test are split by digit identity before copies are generated, so no source
digit appears in both.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from ieu_potion.data.imageset import ImageSet

log = logging.getLogger(__name__)

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
STYLES = ("plain", "cluttered")
CLASS_NAMES = tuple(str(d) for d in range(10))


# scikit-learn's digits: 1797 8x8 glyphs of the 10 digits.
DIGITS = 1797
CLASSES = 10


def train_size(copies: int = 4, test_fraction: float = 0.2, **_: object) -> int:
    """How many training images ``make_digits`` builds with these settings (the other
    settings change the pictures, not their number)."""
    return (DIGITS - int(round(test_fraction * DIGITS))) * copies


def check_settings(
    style: str,
    image_size: int,
    copies: int,
    test_copies: int,
    test_fraction: float,
    clutter: float,
    min_scale: float,
    max_rotation: float,
    max_shift: float,
    min_contrast: float,
    photos: tuple[str, ...],
) -> None:
    """Reject settings that cannot produce a sensible data set."""
    if style not in STYLES:
        raise ValueError(f"unknown digits style {style!r}; valid styles: {', '.join(STYLES)}")
    if not 8 <= image_size <= 512:
        raise ValueError(f"image_size must lie in [8, 512], got {image_size}")
    if copies < 1 or test_copies < 1:
        raise ValueError(f"copies and test_copies must be >= 1, got {copies}, {test_copies}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if not 0.0 <= clutter <= 1.0:
        raise ValueError(f"clutter must lie in [0, 1], got {clutter}")
    if not 0.1 <= min_scale <= 1.0:
        raise ValueError(f"min_scale must lie in [0.1, 1], got {min_scale}")
    if not 0.0 <= max_rotation <= 180.0:
        raise ValueError(f"max_rotation must lie in [0, 180] degrees, got {max_rotation}")
    if not 0.0 <= max_shift <= 0.5:
        raise ValueError(f"max_shift must lie in [0, 0.5], got {max_shift}")
    if not 0.0 <= min_contrast <= 127.5:
        raise ValueError(f"min_contrast must lie in [0, 127.5], got {min_contrast}")
    unknown = sorted(set(photos) - set(PHOTOS))
    if unknown or not photos:
        raise ValueError(f"unknown photos {unknown}; valid photos: {', '.join(PHOTOS)}")


def make_digits(
    style: str = "cluttered",
    image_size: int = 32,
    copies: int = 4,
    test_copies: int = 2,
    test_fraction: float = 0.2,
    clutter: float = 1.0,
    min_scale: float = 0.55,
    max_rotation: float = 26.0,
    max_shift: float = 0.25,
    min_contrast: float = 64.0,
    photos: tuple[str, ...] = PHOTOS,
    seed: int = 0,
) -> dict[str, ImageSet]:
    """Build ``{"train": ImageSet, "test": ImageSet}`` deterministically from ``seed``."""
    from sklearn.datasets import load_digits

    photos = tuple(photos)
    check_settings(
        style,
        image_size,
        copies,
        test_copies,
        test_fraction,
        clutter,
        min_scale,
        max_rotation,
        max_shift,
        min_contrast,
        photos,
    )
    digits = load_digits()
    glyphs = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    targets = digits.target.astype(np.int64)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(glyphs))
    assert len(glyphs) == DIGITS, "scikit-learn's digits changed size"
    n_test = int(round(test_fraction * len(glyphs)))
    split_ids = {"train": np.sort(order[n_test:]), "test": np.sort(order[:n_test])}
    split_copies = {"train": copies, "test": test_copies}

    backgrounds = _load_photos(photos) if style == "cluttered" else None
    out = {}
    for split, ids in split_ids.items():
        ids = np.repeat(ids, split_copies[split])
        split_rng = np.random.default_rng([seed, 1 if split == "train" else 2])
        if style == "plain":
            images = np.stack([_plain(glyphs[i], image_size) for i in ids])
        else:
            images = np.stack(
                [
                    _cluttered(
                        glyphs[i],
                        image_size,
                        backgrounds,
                        clutter,
                        min_scale,
                        max_rotation,
                        max_shift,
                        min_contrast,
                        split_rng,
                    )
                    for i in ids
                ]
            )
        out[split] = ImageSet.clean(images, targets[ids], CLASS_NAMES)
        log.info("generated %d %s %s digits at %d px", len(ids), style, split, image_size)
    return out


def _load_photos(names: tuple[str, ...]) -> list[np.ndarray]:
    import skimage.data

    photos = []
    for name in names:
        photo = np.asarray(getattr(skimage.data, name)())
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=-1)
        photos.append(photo[..., :3].astype(np.uint8))
    return photos


def _glyph_image(glyph: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray((glyph * 255).astype(np.uint8), mode="L").resize(
        (size, size), Image.Resampling.BILINEAR
    )


def _plain(glyph: np.ndarray, size: int) -> np.ndarray:
    gray = np.asarray(_glyph_image(glyph, size))
    return np.repeat(gray[..., None], 3, axis=-1)


def _cluttered(
    glyph: np.ndarray,
    size: int,
    photos: list[np.ndarray],
    clutter: float,
    min_scale: float,
    max_rotation: float,
    max_shift: float,
    min_contrast: float,
    rng: np.random.Generator,
) -> np.ndarray:
    # Background: a random crop of a random photograph, rescaled to the image size and
    # pulled towards its own mean by (1 - clutter).
    photo = photos[rng.integers(len(photos))]
    crop = int(rng.integers(size, max(size + 1, min(photo.shape[:2]) // 2)))
    top = int(rng.integers(photo.shape[0] - crop + 1))
    left = int(rng.integers(photo.shape[1] - crop + 1))
    patch = Image.fromarray(photo[top : top + crop, left : left + crop])
    background = np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    background = clutter * background + (1 - clutter) * background.mean()

    # Foreground: the digit as an opacity mask, scaled, rotated and shifted.
    glyph_size = max(4, int(round(size * rng.uniform(min_scale, 1.0))))
    mask = _glyph_image(glyph, glyph_size).rotate(
        float(rng.uniform(-max_rotation, max_rotation)),
        resample=Image.Resampling.BILINEAR,
    )
    canvas = Image.new("L", (size, size))
    offset = (size - glyph_size) // 2
    shift = rng.uniform(-max_shift, max_shift, size=2) * size
    canvas.paste(mask, (offset + int(round(shift[0])), offset + int(round(shift[1]))))
    alpha = np.asarray(canvas, np.float32)[..., None] / 255.0

    # A random colour, replaced by the background's complement where it would hide the
    # digit (mean absolute channel difference below ``min_contrast``).
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    behind = (alpha * background).sum((0, 1)) / max(float(alpha.sum()), 1e-6)
    if np.abs(colour - behind).mean() < min_contrast:
        colour = 255.0 - behind
    composite = alpha * colour + (1 - alpha) * background
    return np.clip(np.rint(composite), 0, 255).astype(np.uint8)
