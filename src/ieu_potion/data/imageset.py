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
class ImageSet:
    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    poisoned: np.ndarray
    attack: np.ndarray
    class_names: tuple[str, ...] = field(default=())

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
        return ImageSet(
            images=self.images[indices],
            labels=self.labels[indices],
            true_labels=self.true_labels[indices],
            poisoned=self.poisoned[indices],
            attack=self.attack[indices],
            class_names=self.class_names,
        )

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
                raise ValueError(f"{path} is not an image set: missing arrays {sorted(missing)}")
            return cls(
                images=archive["images"],
                labels=archive["labels"].astype(np.int64),
                true_labels=archive["true_labels"].astype(np.int64),
                poisoned=archive["poisoned"].astype(bool),
                attack=archive["attack"],
                class_names=tuple(str(c) for c in archive["class_names"]),
            )


_FIELDS = ("images", "labels", "true_labels", "poisoned", "attack", "class_names")
