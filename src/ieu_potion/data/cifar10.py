"""Read a CIFAR-10 ``cifar-10-batches-py`` folder straight from its batch files.

The batch files are Python pickles.  They are untrusted input, so they are read with an
unpickler that refuses every global except the few side-effect-free names an array needs
to rebuild itself: a crafted batch cannot run code.  Any number of ``data_batch_*`` files of
any length loads (subsets are fine); nothing is checked against a known size or checksum.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.data.imageset import ImageSet

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
LAYOUT = (
    "a `cifar-10-batches-py` folder holding one or more `data_batch_<n>` files and a "
    "`test_batch` file (the python version of CIFAR-10); `batches.meta` is optional"
)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store raw bytes
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _read_batch(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            batch = _RestrictedUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataLayoutError(f"{path} is not a CIFAR-10 batch file: {exc}") from exc
    if not isinstance(batch, dict):
        raise DataLayoutError(f"{path} is not a CIFAR-10 batch file: no dictionary inside")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_batch(path)
    if "data" not in batch or "labels" not in batch:
        raise DataLayoutError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR batch")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DataLayoutError(
            f"{path}: 'data' must be uint8 rows of 3072 values, got {data.dtype} {data.shape}"
        )
    if len(labels) != len(data):
        raise DataLayoutError(
            f"{path}: {len(data)} images but {len(labels)} labels; the batch is inconsistent"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataLayoutError(f"{path}: labels outside 0..9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar10(root: str | Path) -> dict[str, ImageSet]:
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"folder {root} does not exist; expected {LAYOUT}")
    train_files = sorted(root.glob("data_batch_*"))
    test_file = root / "test_batch"
    if not train_files or not test_file.is_file():
        raise DataLayoutError(
            f"{root} is not a CIFAR-10 folder: found {len(train_files)} data_batch files and "
            f"{'a' if test_file.is_file() else 'no'} test_batch; expected {LAYOUT}"
        )
    parts = [_batch_arrays(path) for path in train_files]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = _batch_arrays(test_file)
    return {
        "train": ImageSet.clean(train_images, train_labels, CLASS_NAMES),
        "test": ImageSet.clean(test_images, test_labels, CLASS_NAMES),
    }
