"""The image-set container that every pipeline passes around.

An ``ImageSet`` keeps the ground truth beside each image: the label used for training
(possibly flipped by an attack), the true label, whether the sample was poisoned and by
which attack.  Every isolation or discovery step can therefore be scored later.

Images are ``uint8`` arrays of shape (N, H, W, 3).  Sets are stored as ``.npz`` files
that are read with ``allow_pickle=False``: nothing the project writes needs pickle.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ieu_potion.io import RemotePath, atomic_write_bytes, checked_npz, location

CLEAN = ""  # attack name stored for samples that carry no trigger


@dataclass(frozen=True)
class Overlay:
    """A trigger stamped after the training augmentation (docs/attacks.md, "Stamp order"):
    ``(1 - alpha) x + alpha pattern`` on every augmented view of the poisoned samples.

    The set's ``images`` hold those samples stamped (what every unaugmented pass sees);
    ``originals`` keeps their unstamped pixels, one row per poisoned sample in index
    order, for the augmented views to stamp after cropping and flipping.  ``alpha`` and
    ``pattern`` are one blend for every sample, or one per sample (a leading axis of P
    rows, in the order of ``originals``: a trigger drawn per image).
    """

    alpha: np.ndarray  # (H, W, 1) or (P, H, W, 1) float32 in [0, 1]
    pattern: np.ndarray  # (H, W, 3) or (P, H, W, 3) float32 in [0, 1]
    originals: np.ndarray  # (P, H, W, 3) uint8

    def __post_init__(self) -> None:
        h, w = self.size
        lead = (len(self.originals),) if self.per_sample else ()
        expected = {"alpha": (*lead, h, w, 1), "pattern": (*lead, h, w, 3)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"overlay {name} has shape {getattr(self, name).shape}, expected {shape}"
                )
        if self.originals.ndim != 4 or self.originals.shape[1:] != (h, w, 3):
            raise ValueError(
                f"overlay originals have shape {self.originals.shape}, expected (P, {h}, {w}, 3)"
            )

    @property
    def per_sample(self) -> bool:
        return self.alpha.ndim == 4

    @property
    def size(self) -> tuple[int, int]:
        return self.alpha.shape[-3], self.alpha.shape[-2]

    def rows(self, rows: np.ndarray) -> Overlay:
        """The overlay of the poisoned samples at ``rows`` (of ``originals``)."""
        if not self.per_sample:
            return Overlay(self.alpha, self.pattern, self.originals[rows])
        return Overlay(self.alpha[rows], self.pattern[rows], self.originals[rows])


@dataclass(frozen=True)
class BatchStamp:
    """The part of an ``Overlay`` that one batch needs: which of its samples are stamped
    after the augmentation, and their unstamped pixels."""

    stamped: np.ndarray  # (B,) bool
    originals: np.ndarray  # (stamped.sum(), H, W, 3) uint8
    alpha: np.ndarray
    pattern: np.ndarray


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    poisoned: np.ndarray
    attack: np.ndarray
    class_names: tuple[str, ...] = field(default=())
    overlay: Overlay | None = None  # a trigger stamped after the augmentation

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                "images must be a uint8 array of shape (N, H, W, 3), got "
                f"{self.images.dtype} {self.images.shape}"
            )
        for name in ("labels", "true_labels", "poisoned", "attack"):
            column = getattr(self, name)
            if column.shape != (n,):
                raise ValueError(f"{name} has shape {column.shape}, expected ({n},)")
        if not self.class_names:
            raise ValueError("an image set needs its class names")
        for name in ("labels", "true_labels"):
            column = getattr(self, name)
            if n and (column.min() < 0 or column.max() >= self.num_classes):
                raise ValueError(
                    f"{name} must lie in [0, {self.num_classes - 1}] for "
                    f"{self.num_classes} classes, got [{column.min()}, {column.max()}]"
                )
        if self.overlay is not None:
            if self.overlay.size != self.image_size:
                raise ValueError(
                    f"the overlay is {self.overlay.size} px, the images {self.image_size}"
                )
            if len(self.overlay.originals) != int(self.poisoned.sum()):
                raise ValueError(
                    f"the overlay keeps {len(self.overlay.originals)} unstamped images for "
                    f"{int(self.poisoned.sum())} poisoned samples"
                )

    @classmethod
    def clean(cls, images: np.ndarray, labels: np.ndarray, class_names) -> ImageSet:
        labels = np.asarray(labels, dtype=np.int64)
        return cls(
            images=np.ascontiguousarray(images, dtype=np.uint8),
            labels=labels,
            true_labels=labels.copy(),
            poisoned=np.zeros(len(labels), dtype=bool),
            attack=np.full(len(labels), CLEAN, dtype="<U1"),
            class_names=tuple(str(c) for c in class_names),
        )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    def subset(self, indices: np.ndarray) -> ImageSet:
        indices = np.asarray(indices)
        overlay = None
        if self.overlay is not None:
            overlay = self.overlay.rows(self._overlay_rows(indices))
        return ImageSet(
            images=self.images[indices],
            labels=self.labels[indices],
            true_labels=self.true_labels[indices],
            poisoned=self.poisoned[indices],
            attack=self.attack[indices],
            class_names=self.class_names,
            overlay=overlay,
        )

    def stamp_for(self, indices: np.ndarray) -> BatchStamp | None:
        """What the augmented views of the samples at ``indices`` stamp after the
        augmentation; None where the set's trigger is part of its stored images."""
        if self.overlay is None:
            return None
        indices = np.asarray(indices)
        o = self.overlay.rows(self._overlay_rows(indices))
        return BatchStamp(self.poisoned[indices], o.originals, o.alpha, o.pattern)

    def _overlay_rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows of ``overlay.originals`` of the poisoned samples among ``indices``."""
        row = np.cumsum(self.poisoned) - 1
        return row[indices[self.poisoned[indices]]]

    def to_npz_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            images=self.images,
            labels=self.labels,
            true_labels=self.true_labels,
            poisoned=self.poisoned,
            attack=self.attack.astype(str),
            class_names=np.array(self.class_names, dtype=str),
            **(
                {}
                if self.overlay is None
                else {
                    "overlay_alpha": self.overlay.alpha,
                    "overlay_pattern": self.overlay.pattern,
                    "overlay_originals": self.overlay.originals,
                }
            ),
        )
        return buffer.getvalue()

    def save(self, path: str | Path | RemotePath) -> None:
        atomic_write_bytes(location(path), self.to_npz_bytes())

    @classmethod
    def load(cls, path: str | Path | RemotePath) -> ImageSet:
        payload = checked_npz(location(path).read_bytes(), str(path))
        with np.load(payload, allow_pickle=False) as archive:
            missing = set(_FIELDS) - set(archive.files)
            if missing:
                raise ValueError(
                    f"{str(path)!r} is not an image set: missing arrays {sorted(missing)}"
                )
            return cls(
                images=archive["images"],
                labels=archive["labels"].astype(np.int64),
                true_labels=archive["true_labels"].astype(np.int64),
                poisoned=archive["poisoned"].astype(bool),
                attack=archive["attack"],
                class_names=tuple(str(c) for c in archive["class_names"]),
                overlay=_read_overlay(archive, path),
            )


def _read_overlay(archive, path) -> Overlay | None:
    present = [name for name in _OVERLAY if name in archive.files]
    if not present:
        return None
    if len(present) != len(_OVERLAY):
        missing = sorted(set(_OVERLAY) - set(present))
        raise ValueError(f"{str(path)!r} is not an image set: missing arrays {missing}")
    return Overlay(
        archive["overlay_alpha"].astype(np.float32),
        archive["overlay_pattern"].astype(np.float32),
        archive["overlay_originals"].astype(np.uint8),
    )


_FIELDS = ("images", "labels", "true_labels", "poisoned", "attack", "class_names")
_OVERLAY = ("overlay_alpha", "overlay_pattern", "overlay_originals")
