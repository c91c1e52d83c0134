"""Read a CIFAR-10 ``cifar-10-batches-py`` folder straight from its batch files.

The batch files are Python pickles.  They are untrusted input, read under these rules:

- Only ``data_batch_<n>`` (``n`` a number; read in numeric order) and ``test_batch`` are
  batch files; other names (``data_batch_1.bak``, say) are ignored and logged.  A batch
  name that is a folder, a broken link or anything but a regular file is refused.
- A batch file larger than ``MAX_BATCH_BYTES`` (64 MiB; a real batch is about 31 MB) is
  refused before it is read.
- Before anything is unpickled, the opcode stream is scanned: a pickle with more than
  ``MAX_PICKLE_OPS`` opcodes, or more than ``MAX_NESTING_OPS`` tuple or frozenset
  opcodes (real batches have a handful; deeply nested tuples crash Python when hashed),
  is refused.
- Unpickling refuses every global except the few side-effect-free names an array needs
  to rebuild itself: a crafted batch cannot run code.
- What comes out is checked by type before any array is built from it: ``data`` must be a
  ``uint8`` array of 3072-value rows whose pixels fit in the file itself (a pickle that
  shares one row many times, or an array with a huge declared shape, is refused without
  allocating it), and ``labels`` a list of ``int`` in 0..9, one per row.

Any number of ``data_batch_*`` files of any length loads (subsets are fine); nothing is
checked against a known size or checksum.  Every error names the batch file.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.data.imageset import ImageSet

log = logging.getLogger(__name__)

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
ROW_VALUES = 3 * 32 * 32

MAX_BATCH_BYTES = 64 * 2**20
MAX_PICKLE_OPS = 2_000_000  # a real batch has about 30 000 (protocol 4) to 90 000 (protocol 2)
MAX_NESTING_OPS = 10_000  # a real batch has fewer than 20

_TRAIN_NAME = re.compile(r"data_batch_(\d+)")
_NESTING_OPCODES = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "FROZENSET"}

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


def train_batch_files(root: Path) -> list[Path]:
    """The ``data_batch_<n>`` entries of ``root`` in numeric order; other names that start
    with ``data_batch_`` are logged and left out."""
    found = []
    for path in root.glob("data_batch_*"):
        match = _TRAIN_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
        else:
            log.warning("ignoring %s: not a batch name (data_batch_<n>)", path)
    return [path for _, path in sorted(found)]


def check_folder(root: str | Path) -> None:
    """Raise ``DataLayoutError`` unless ``root`` looks like a CIFAR-10 folder: the batch
    files exist, are regular files and are under the size limit (nothing is read)."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"folder {str(root)!r} does not exist; expected {LAYOUT}")
    train_files = train_batch_files(root)
    test_file = root / "test_batch"
    if not train_files or not (test_file.exists() or test_file.is_symlink()):
        raise DataLayoutError(
            f"{str(root)!r} is not a CIFAR-10 folder: found {len(train_files)} data_batch "
            "files and "
            f"{'a' if test_file.exists() else 'no'} test_batch; expected {LAYOUT}"
        )
    for path in [*train_files, test_file]:
        _check_batch_file(path)


def most_train_images(root: str | Path) -> int:
    """An upper bound on the training images of the CIFAR-10 folder ``root`` without
    reading a batch: each image takes at least its 3072 pixel bytes of a batch file."""
    return sum(_check_batch_file(path) // ROW_VALUES for path in train_batch_files(Path(root)))


def _check_batch_file(path: Path) -> int:
    """The size of the batch file ``path``; refuse anything but a regular file under the
    size limit."""
    if path.is_dir():
        raise DataLayoutError(
            f"{str(path)!r} is a folder, not a CIFAR-10 batch file; expected {LAYOUT}"
        )
    if path.is_symlink() and not path.exists():
        raise DataLayoutError(f"{str(path)!r} is a broken link; expected a CIFAR-10 batch file")
    if not path.is_file():
        raise DataLayoutError(
            f"{str(path)!r} is not a regular file; expected a CIFAR-10 batch file"
        )
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise DataLayoutError(_too_large(path, size))
    return size


def _too_large(path: Path, size: int) -> str:
    return (
        f"{str(path)!r} holds {size} bytes, over the limit of {MAX_BATCH_BYTES} bytes "
        f"({MAX_BATCH_BYTES // 2**20} MiB) for a CIFAR-10 batch file (a real one is about "
        "31 MB); it is not read"
    )


def _scan_opcodes(path: Path, raw: bytes) -> None:
    """Refuse a pickle too long or too deeply nested to be a batch, before unpickling."""
    ops = nesting = 0
    try:
        for opcode, _, _ in pickletools.genops(io.BytesIO(raw)):
            ops += 1
            nesting += opcode.name in _NESTING_OPCODES
            if ops > MAX_PICKLE_OPS or nesting > MAX_NESTING_OPS:
                raise DataLayoutError(
                    f"{str(path)!r} is not a CIFAR-10 batch file: its pickle has more than "
                    f"{MAX_PICKLE_OPS} operations or {MAX_NESTING_OPS} nested tuples; a real "
                    "batch has a few tens of thousands and fewer than 20; it is not unpickled"
                )
    except DataLayoutError:
        raise
    except (ValueError, EOFError, UnicodeDecodeError) as exc:
        raise DataLayoutError(f"{str(path)!r} is not a CIFAR-10 batch file: {exc}") from exc


def _read_batch(path: Path) -> tuple[dict, int]:
    """The batch's dictionary (keys decoded to ``str``) and the file's size in bytes."""
    _check_batch_file(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BATCH_BYTES + 1)
    except OSError as exc:
        raise DataLayoutError(f"cannot read CIFAR-10 batch file {str(path)!r}: {exc}") from exc
    if len(raw) > MAX_BATCH_BYTES:  # grew since it was measured
        raise DataLayoutError(_too_large(path, len(raw)))
    _scan_opcodes(path, raw)
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataLayoutError(f"{str(path)!r} is not a CIFAR-10 batch file: {exc}") from exc
    except MemoryError as exc:
        raise DataLayoutError(
            f"{str(path)!r} is not a CIFAR-10 batch file: it declares an array larger than memory"
        ) from exc
    if not isinstance(batch, dict):
        raise DataLayoutError(f"{str(path)!r} is not a CIFAR-10 batch file: no dictionary inside")
    entries = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    return entries, len(raw)


def _check_data(path: Path, data: object, file_size: int) -> np.ndarray:
    expected = f"'data' must be a uint8 array of rows of {ROW_VALUES} values"
    if not isinstance(data, np.ndarray):
        raise DataLayoutError(f"{str(path)!r}: {expected}, got a {type(data).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_VALUES:
        raise DataLayoutError(f"{str(path)!r}: {expected}, got {data.dtype} {data.shape}")
    if len(data) == 0:
        raise DataLayoutError(f"{str(path)!r}: 'data' holds no images (0 rows); the batch is empty")
    if data.nbytes > file_size:
        # Pixels that are not in the file: a huge declared shape or rows repeated by
        # stride tricks.  Refused before anything reads or copies them.
        raise DataLayoutError(
            f"{str(path)!r}: 'data' declares {data.shape[0]} rows ({data.nbytes} bytes), more than "
            f"the file's {file_size} bytes can hold; the batch is corrupt or crafted"
        )
    return data


def _check_labels(path: Path, labels: object, rows: int) -> np.ndarray:
    expected = f"'labels' must be a list of integers 0..{len(CLASS_NAMES) - 1}, one per row"
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataLayoutError(
                f"{str(path)!r}: {expected}, got an array {labels.dtype} {labels.shape}"
            )
        if len(labels) != rows:
            raise DataLayoutError(_count_mismatch(path, rows, len(labels)))
        values = labels.astype(np.int64)
        bad = np.flatnonzero((values < 0) | (values >= len(CLASS_NAMES)))
        if len(bad):
            raise DataLayoutError(
                f"{str(path)!r}: label {bad[0]} is {values[bad[0]]}, outside 0..9"
            )
        return values
    if not isinstance(labels, list | tuple):
        raise DataLayoutError(f"{str(path)!r}: {expected}, got a {type(labels).__name__}")
    if len(labels) != rows:
        raise DataLayoutError(_count_mismatch(path, rows, len(labels)))
    for i, value in enumerate(labels):
        if type(value) is not int:  # bool, str, float, containers: refused
            raise DataLayoutError(
                f"{str(path)!r}: {expected}; label {i} is a {type(value).__name__}"
            )
        if not 0 <= value < len(CLASS_NAMES):
            shown = value if abs(value) < 10**6 else f"an integer of {value.bit_length()} bits"
            raise DataLayoutError(f"{str(path)!r}: labels outside 0..9 (label {i} is {shown})")
    return np.array(labels, dtype=np.int64)


def _count_mismatch(path: Path, images: int, labels: int) -> str:
    return f"{str(path)!r}: {images} images but {labels} labels; the batch is inconsistent"


def _batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch, size = _read_batch(path)
    if "data" not in batch or "labels" not in batch:
        raise DataLayoutError(
            f"{str(path)!r} lacks the 'data' and 'labels' entries of a CIFAR batch"
        )
    data = _check_data(path, batch["data"], size)
    labels = _check_labels(path, batch["labels"], len(data))
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar10(root: str | Path) -> dict[str, ImageSet]:
    root = Path(root)
    check_folder(root)
    parts = [_batch_arrays(path) for path in train_batch_files(root)]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = _batch_arrays(root / "test_batch")
    return {
        "train": ImageSet.clean(train_images, train_labels, CLASS_NAMES),
        "test": ImageSet.clean(test_images, test_labels, CLASS_NAMES),
    }
