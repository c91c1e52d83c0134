"""Class-per-subfolder image folders (GTSRB, TinyImageNet, Imagenette layouts).

``root/<train_dir>/<class>/**/<image>``: every subfolder of the split folder is a class
(sorted by name), and every image file below it, at any depth, belongs to that class;
TinyImageNet's ``train/<wnid>/images/*.JPEG`` therefore reads as it is.  The test split
comes from ``root/<test_dir>`` with the same classes, or, where there is no such folder
(GTSRB's training folder alone, say), from a seeded hold-out of ``test_fraction`` of the
training images.  Images are converted to RGB and resized to ``image_size``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.data.imageset import ImageSet

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def layout(train_dir: str, test_dir: str | None) -> str:
    test = f" and `{test_dir}/<class>/...`" if test_dir else ""
    return (
        f"a folder holding `{train_dir}/<class>/...`{test}: one subfolder per class, "
        f"each with image files ({', '.join(sorted(IMAGE_SUFFIXES))}) at any depth"
    )


def _class_files(split_root: Path, expected: str) -> dict[str, list[Path]]:
    if not split_root.is_dir():
        raise DataLayoutError(f"folder {split_root} does not exist; expected {expected}")
    classes = sorted(p for p in split_root.iterdir() if p.is_dir())
    if not classes:
        raise DataLayoutError(f"{split_root} has no class subfolders; expected {expected}")
    files = {}
    for folder in classes:
        found = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found:
            raise DataLayoutError(f"class folder {folder} holds no image files")
        files[folder.name] = found
    return files


def _read_images(paths: list[Path], image_size: int) -> np.ndarray:
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                resized = img.convert("RGB").resize(
                    (image_size, image_size), Image.Resampling.BILINEAR
                )
        except (UnidentifiedImageError, OSError) as exc:
            raise DataLayoutError(f"cannot read image {path}: {exc}") from exc
        out[i] = np.asarray(resized)
    return out


def _flatten(files: dict[str, list[Path]], class_index: dict[str, int]):
    paths = [p for name in files for p in files[name]]
    labels = np.array([class_index[name] for name in files for _ in files[name]], np.int64)
    return paths, labels


def read_image_folders(
    root: str | Path,
    image_size: int,
    train_dir: str = "train",
    test_dir: str | None = "val",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, ImageSet]:
    root = Path(root)
    expected = layout(train_dir, test_dir)
    if not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must lie in [8, 1024], got {image_size}")
    if not root.is_dir():
        raise DataLayoutError(f"folder {root} does not exist; expected {expected}")
    train_files = _class_files(root / train_dir, expected)
    class_names = tuple(train_files)
    class_index = {name: i for i, name in enumerate(class_names)}
    train_paths, train_labels = _flatten(train_files, class_index)

    if test_dir:
        test_files = _class_files(root / test_dir, expected)
        extra = sorted(set(test_files) - set(class_names))
        if extra:
            raise DataLayoutError(
                f"{root / test_dir} has classes {extra} that {root / train_dir} lacks; "
                f"the two splits must share one set of {len(class_names)} class folders"
            )
        test_paths, test_labels = _flatten(test_files, class_index)
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        order = np.random.default_rng(seed).permutation(len(train_paths))
        n_test = max(1, int(round(test_fraction * len(order))))
        test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        test_paths = [train_paths[i] for i in test_idx]
        test_labels = train_labels[test_idx]
        train_paths = [train_paths[i] for i in train_idx]
        train_labels = train_labels[train_idx]

    log.info(
        "reading %d training and %d test images in %d classes from %s",
        len(train_paths),
        len(test_paths),
        len(class_names),
        root,
    )
    return {
        "train": ImageSet.clean(_read_images(train_paths, image_size), train_labels, class_names),
        "test": ImageSet.clean(_read_images(test_paths, image_size), test_labels, class_names),
    }
