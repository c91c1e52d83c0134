"""Class-per-subfolder image folders (GTSRB, TinyImageNet, Imagenette layouts).

``root/<train_dir>/<class>/**/<image>``: every subfolder of the split folder is a class
(sorted by name), and every image file below it, at any depth, belongs to that class;
TinyImageNet's ``train/<wnid>/images/*.JPEG`` therefore reads as it is.  The test split
comes from ``root/<test_dir>`` with the same classes, or, where there is no such folder
(GTSRB's training folder alone, say), from a seeded hold-out of ``test_fraction`` of the
training images.  Images are turned upright by their EXIF orientation, converted to RGB
and resized to ``image_size``.

Input that is not a plain image folder is handled by these rules (each logged or refused
with a ``DataLayoutError`` that names the file or folder):

- Hidden entries, whose names start with ``.`` (``.ipynb_checkpoints/``, ``.DS_Store``,
  macOS ``._img.jpg`` companions), are skipped at every level: a hidden folder is not a
  class and its images are not read.  The skips are logged.
- A class folder may be a link to a folder elsewhere.  Two class folders that are the
  same folder once links are resolved, or one inside the other, are refused (the images
  would be read under two labels); so is a broken link where a class folder or an image
  should be.  Links to folders below a class folder are not followed (logged).
- An image file that several links in one class resolve to is read once; the
  duplicates are logged.  The same file in two classes is refused.
- A file larger than ``MAX_IMAGE_BYTES`` (128 MiB) is refused before it is opened, and
  an image of more than ``MAX_IMAGE_PIXELS`` (64 Mi pixels, 8192 x 8192) is refused
  after its header is read, before it is decoded (decompression bombs).  Pillow's own
  bomb check, whatever ``PIL.Image.MAX_IMAGE_PIXELS`` is, gives the same error.
- 16-bit images (greyscale ``I;16``, or ``I`` from 16-bit PGM or TIFF) are scaled to 8 bit
  by their bit depth (65535 -> 255, 32768 -> 128), not clipped at 255; 16-bit RGB images
  arrive at 8 bit from Pillow.  Floating-point images, and integer images of more than 16
  bits whose depth is unknown, are refused.
- A file with an image suffix that is not a regular file (a pipe, a device) is refused.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.data.imageset import ImageSet

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_BYTES = 128 * 2**20
MAX_IMAGE_PIXELS = 64 * 2**20
_BITS_PER_SAMPLE = 258  # the TIFF tag


def layout(train_dir: str, test_dir: str | None) -> str:
    test = f" and `{test_dir}/<class>/...`" if test_dir else ""
    return (
        f"a folder holding `{train_dir}/<class>/...`{test}: one subfolder per class, "
        f"each with image files ({', '.join(sorted(IMAGE_SUFFIXES))}) at any depth"
    )


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _log_skipped(what: str, where: Path, paths: list) -> None:
    if paths:
        shown = ", ".join(str(p) for p in paths[:3])
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        log.warning("skipped %d %s below %s: %s%s", len(paths), what, where, shown, more)


def _class_folders(split_root: Path, expected: str) -> list[Path]:
    """The class folders of a split, checked not to be links to one another."""
    if not split_root.is_dir():
        raise DataLayoutError(f"folder {split_root} does not exist; expected {expected}")
    try:
        entries = sorted(split_root.iterdir())
    except OSError as exc:
        raise DataLayoutError(f"cannot list folder {split_root}: {exc.strerror}") from exc
    hidden, classes = [], []
    for entry in entries:
        if _hidden(entry.name):
            hidden.append(entry)
        elif entry.is_symlink() and not entry.exists():
            raise DataLayoutError(
                f"{entry} is a broken link where a class folder or file should be; "
                "remove it or point it at the class's images"
            )
        elif entry.is_dir():
            classes.append(entry)
    _log_skipped("hidden entries (not classes)", split_root, hidden)
    if not classes:
        raise DataLayoutError(f"{split_root} has no class subfolders; expected {expected}")
    _check_distinct(split_root, classes)
    return classes


def _check_distinct(split_root: Path, classes: list[Path]) -> None:
    """Refuse class folders that are, once links are resolved, the same folder, one inside
    the other, or the split folder itself (or a folder above it)."""
    real = {folder: folder.resolve() for folder in classes}
    owner = {}
    for folder in classes:
        if real[folder] in owner:
            raise DataLayoutError(
                f"class folders {owner[real[folder]]} and {str(folder)!r} are the same folder "
                f"({real[folder]}) once links are resolved: its images would be read under "
                "two labels; remove the link"
            )
        owner[real[folder]] = folder
    split_real = split_root.resolve()
    for folder in classes:
        if real[folder] == split_real or real[folder] in split_real.parents:
            raise DataLayoutError(
                f"class folder {str(folder)!r} links to {real[folder]}, which holds the "
                "split folder "
                f"{split_root} itself; remove the link"
            )
        for parent in real[folder].parents:
            if parent in owner:
                raise DataLayoutError(
                    f"class folders {owner[parent]} and {str(folder)!r} overlap: "
                    f"{str(folder)!r} resolves "
                    f"to {real[folder]}, inside {parent}; its images would be read under two "
                    "labels; remove the link"
                )


def _raise_walk_error(error: OSError) -> None:
    raise DataLayoutError(f"cannot list folder {error.filename}: {error.strerror}") from error


def _image_files(folder: Path) -> list[tuple[Path, Path]]:
    """(path, resolved path) of every image file below a class folder, sorted by path,
    each resolved file once; hidden entries and links to folders are skipped."""
    folder_real = folder.resolve()
    hidden, linked_folders, found = [], [], []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise_walk_error):
        here = Path(dirpath)
        keep = []
        for name in dirnames:
            if _hidden(name):
                hidden.append(here / name)
            elif (here / name).is_symlink():
                linked_folders.append(here / name)  # os.walk does not descend into it
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = here / name
            if _hidden(name):
                hidden.append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
    _log_skipped("hidden files and folders", folder, hidden)
    _log_skipped("links to folders (not followed)", folder, linked_folders)

    entries = []
    for path in sorted(found):
        try:
            info = path.stat()
        except FileNotFoundError as exc:
            raise DataLayoutError(
                f"{str(path)!r} is a broken link; expected an image file"
            ) from exc
        except OSError as exc:
            raise DataLayoutError(f"cannot read image {str(path)!r}: {exc.strerror}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise DataLayoutError(f"{str(path)!r} is not a regular file; expected an image file")
        if info.st_size > MAX_IMAGE_BYTES:
            raise DataLayoutError(
                f"image {str(path)!r} holds {info.st_size} bytes, over the limit of "
                f"{MAX_IMAGE_BYTES} "
                f"bytes ({MAX_IMAGE_BYTES // 2**20} MiB) for one image file; it is not opened"
            )
        # Only the class folder and the file itself can be links (linked folders below
        # are not walked), so most files resolve without a system call.
        linked = path.is_symlink()
        real = path.resolve() if linked else folder_real / path.relative_to(folder)
        entries.append((path, real, linked))

    # Of several paths to one file, the file itself is kept (else the first link).
    keep = {}
    for path, real, linked in entries:
        if real not in keep or (not linked and keep[real][1]):
            keep[real] = (path, linked)
    files = [(path, real) for path, real, _ in entries if keep[real][0] == path]
    duplicates = [
        f"{str(path)!r} (= {keep[real][0]})" for path, real, _ in entries if keep[real][0] != path
    ]
    _log_skipped("duplicate links to images already read in this class", folder, duplicates)
    return files


def _class_files(split_root: Path, expected: str) -> dict[str, list[Path]]:
    files, seen = {}, {}
    for folder in _class_folders(split_root, expected):
        found = _image_files(folder)
        if not found:
            raise DataLayoutError(f"class folder {str(folder)!r} holds no image files")
        for path, real in found:
            if real in seen:
                raise DataLayoutError(
                    f"images {seen[real]} and {str(path)!r} are the same file ({real}) in "
                    "two class "
                    "folders: its label is ambiguous; keep it in one class"
                )
            seen[real] = path
        files[folder.name] = [path for path, _ in found]
    return files


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """``img`` as 8-bit RGB, 16-bit samples scaled by their bit depth (not clipped)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img).astype(np.int64)
        bits = 16 if img.mode.startswith("I;16") else _integer_bits(img, values, path)
        scaled = np.rint(values * (255.0 / (2**bits - 1)))
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise DataLayoutError(
            f"image {str(path)!r} holds floating-point pixels, whose range is unknown; expected an "
            "8- or 16-bit image"
        )
    return img.convert("RGB")


def _integer_bits(img: Image.Image, values: np.ndarray, path: Path) -> int:
    """The bit depth of an ``I`` image: the TIFF tag, else 16 where the values fit."""
    tags = getattr(img, "tag_v2", None)
    declared = tags.get(_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(declared, tuple):
        declared = declared[0] if declared else None
    if isinstance(declared, int) and 1 <= declared <= 32:
        return max(declared, 8)
    if values.size == 0 or (values.min() >= 0 and values.max() < 2**16):
        return 16  # PGM with a large maxval, 16-bit PNG in older Pillow
    raise DataLayoutError(
        f"image {str(path)!r} holds integer pixels beyond 16 bits of unknown depth; expected an "
        "8- or 16-bit image"
    )


def _bomb(path: Path, detail: str) -> DataLayoutError:
    return DataLayoutError(
        f"image {str(path)!r} is {detail}, over the pixel limit of {MAX_IMAGE_PIXELS} pixels "
        f"({MAX_IMAGE_PIXELS // 2**20} Mi, 8192 x 8192): a decompression bomb, or far larger "
        "than a data set's images; it is not decoded"
    )


def _read_image(path: Path, image_size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _bomb(path, f"{width} x {height} pixels")
            ImageOps.exif_transpose(img, in_place=True)
            resized = _to_rgb(img, path).resize((image_size, image_size), Image.Resampling.BILINEAR)
    except DataLayoutError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(path, f"refused by Pillow ({exc})") from exc
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        EOFError,
        SyntaxError,
        struct.error,
        ZeroDivisionError,
    ) as exc:
        raise DataLayoutError(f"cannot read image {str(path)!r}: {exc}") from exc
    return np.asarray(resized)


def _read_images(paths: list[Path], image_size: int) -> np.ndarray:
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) between its limit and twice its limit.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for i, path in enumerate(paths):
            out[i] = _read_image(path, image_size)
    return out


def _flatten(files: dict[str, list[Path]], class_index: dict[str, int]):
    paths = [p for name in files for p in files[name]]
    labels = np.array([class_index[name] for name in files for _ in files[name]], np.int64)
    return paths, labels


def extent(
    root: str | Path,
    train_dir: str = "train",
    test_dir: str | None = "val",
    test_fraction: float = 0.2,
    **_: object,
) -> tuple[int, int]:
    """(class count, training images) of the folder ``root``, from its listing alone
    (``read_image_folders`` with the same settings reads that many)."""
    files = _class_files(Path(root) / train_dir, layout(train_dir, test_dir))
    images = sum(len(paths) for paths in files.values())
    if not test_dir:
        images -= max(1, int(round(test_fraction * images)))
    return len(files), images


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
        raise DataLayoutError(f"folder {str(root)!r} does not exist; expected {expected}")
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
        absent = sorted(set(range(len(class_names))) - set(train_labels.tolist()))
        if absent:
            names = ", ".join(repr(class_names[i]) for i in absent)
            raise DataLayoutError(
                f"{root / train_dir}: after holding out test_fraction {test_fraction} (seed "
                f"{seed}), class {names} has no training image left; add images to it, "
                "lower test_fraction, or give a test folder (test_dir)"
            )

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
