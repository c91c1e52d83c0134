"""Bad and hostile files given to the loaders: CIFAR-10 batches, image folders, saved
models, checkpoints and the ISSBA codec.  Each is refused with an error that names the
file (and, where one applies, the limit), or read in the documented way; nothing on disk
changes."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from kedro.io import DatasetError
from PIL import Image
from safetensors.torch import save_file

from ieu_potion import io as ieu_io
from ieu_potion.adapters.datasets import (
    ArraysDataset,
    Cifar10Dataset,
    ModelDataset,
    StegaCodecDataset,
)
from ieu_potion.attacks.stega import CodecConfig, StegaCodec, load_codec, save_codec
from ieu_potion.data import DataLayoutError, ImageSet, cifar10, folders
from ieu_potion.data.cifar10 import read_cifar10
from ieu_potion.data.errors import ArtifactError
from ieu_potion.data.folders import read_image_folders
from ieu_potion.models import ModelSpec, build_model, load_model, save_model
from ieu_potion.models.factory import read_state_dict
from tests.badinput import bad_input, rejects
from tests.data.test_cifar10 import make_cifar_folder

FOLDERS_LOG = "ieu_potion.data.folders"


# ---------------------------------------------------------------------------- helpers


def write_pickle(path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def sparse_file(path, size: int) -> None:
    """A file of ``size`` zero bytes that takes no disk space."""
    with open(path, "wb") as handle:
        handle.truncate(size)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG written by hand: its header may declare any size, whatever the data holds."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def image_folder(root, classes=("a", "b"), per_class=2):
    """``root/train/<class>/img<i>.png`` (8 x 8, one colour per class)."""
    for c, name in enumerate(classes):
        folder = root / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (60 * c, 20 * i, 100)).save(folder / f"img{i}.png")
    return root


def read_train(root, size=8):
    """Every training image of ``root`` (hold-out of one image for the test split)."""
    data = read_image_folders(root, size, test_dir=None, test_fraction=0.01)
    return data["train"], data["test"]


def single_image_folder(root, name: str, content: bytes):
    """``root/train/a/<name>`` holding ``content``, a second plain image in a class b, and
    a test folder holding one image of b."""
    (root / "train" / "a").mkdir(parents=True)
    (root / "train" / "a" / name).write_bytes(content)
    image_folder(root, classes=("b",), per_class=1)
    (root / "test" / "b").mkdir(parents=True)
    Image.new("RGB", (8, 8), (60, 0, 100)).save(root / "test" / "b" / "img0.png")
    return root


def read_image_under_test(root, size=16) -> np.ndarray:
    data = read_image_folders(root, size, test_dir="test")
    merged = np.concatenate([data["train"].images, data["test"].images])
    labels = np.concatenate([data["train"].labels, data["test"].labels])
    return merged[labels == 0][0]


# -------------------------------------------------------------------------- CIFAR-10


@bad_input(
    "a CIFAR-10 batch file larger than 64 MiB",
    "DataLayoutError naming the file and the 64 MiB limit; the file is not read",
)
def test_cifar_batch_over_the_size_limit(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    sparse_file(root / "data_batch_2", cifar10.MAX_BATCH_BYTES + 1)
    rejects(lambda: read_cifar10(root), DataLayoutError, "data_batch_2", "64 MiB", unchanged=root)
    rejects(lambda: Cifar10Dataset(str(root)).check(), DataLayoutError, "data_batch_2", "64 MiB")


def _shared_rows():
    row = [0] * 3072
    return [row] * 1_000_000  # one list object, referenced a million times


def _shared_nested():
    row = [0] * 3072
    block = [row] * 1000
    return [block] * 1000  # 3 billion values from a pickle of a few kB


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            _shared_rows,
            marks=bad_input(
                "a CIFAR-10 batch whose 'data' is one list row shared a million times",
                "DataLayoutError naming the file: 'data' must be a uint8 array; no array "
                "is built from the list",
            ),
            id="shared-rows",
        ),
        pytest.param(
            _shared_nested,
            marks=bad_input(
                "a CIFAR-10 batch of a few kB whose 'data' nests shared lists to 3 billion values",
                "DataLayoutError naming the file: 'data' must be a uint8 array; no array "
                "is built from the list",
            ),
            id="shared-nested",
        ),
    ],
)
def test_cifar_memo_shared_lists_are_refused_before_any_array_is_built(tmp_path, data):
    root = tmp_path / "c"
    make_cifar_folder(root)
    write_pickle(root / "data_batch_1", {b"data": data(), b"labels": [0] * 10})
    assert (root / "data_batch_1").stat().st_size < 3_000_000
    rejects(
        lambda: read_cifar10(root), DataLayoutError, "data_batch_1", "uint8 array", unchanged=root
    )


class _HugeArray:
    """Unpickles as ``numpy.ndarray((100000, 3072), 'B')``: 300 MB declared, none stored."""

    def __reduce__(self):
        return (np.ndarray, ((100_000, 3072), "B"))


@bad_input(
    "a CIFAR-10 batch declaring a 100 000-row array whose pixels are not in the file",
    "DataLayoutError naming the file: more rows than the file can hold; nothing is copied",
)
def test_cifar_array_larger_than_its_file_is_refused(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    write_pickle(root / "data_batch_1", {b"data": _HugeArray(), b"labels": [0] * 100_000})
    rejects(
        lambda: read_cifar10(root), DataLayoutError, "data_batch_1", "100000 rows", unchanged=root
    )


@bad_input(
    "a CIFAR-10 batch of 300 000 nested tuples (hashing it crashes Python)",
    "DataLayoutError naming the file: too many nested tuples; it is not unpickled",
)
def test_cifar_deeply_nested_pickle_is_refused_before_unpickling(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    # {(((...(0,)...),): 1}: protocol 2, 300 000 TUPLE1 opcodes around one integer.
    (root / "test_batch").write_bytes(b"\x80\x02}K\x00" + b"\x85" * 300_000 + b"K\x01s.")
    rejects(
        lambda: read_cifar10(root), DataLayoutError, "test_batch", "nested tuples", unchanged=root
    )


@pytest.mark.parametrize(
    ("labels", "culprit"),
    [
        pytest.param(
            [b"cat"] * 5,
            "label 0 is a bytes",
            marks=bad_input(
                "CIFAR-10 labels that are strings",
                "DataLayoutError naming the file and the first bad label",
            ),
            id="strings",
        ),
        pytest.param(
            [0, 1, 2, 3, 2**70],
            "label 4 is an integer of 71 bits",
            marks=bad_input(
                "a CIFAR-10 label of 2**70",
                "DataLayoutError naming the file: labels outside 0..9 (not an OverflowError)",
            ),
            id="huge-int",
        ),
        pytest.param(
            [0, 1, True, 3, 4],
            "label 2 is a bool",
            marks=bad_input(
                "a CIFAR-10 label that is True",
                "DataLayoutError naming the file and the label: labels must be integers",
            ),
            id="bool",
        ),
    ],
)
def test_cifar_labels_of_the_wrong_type_name_the_file(tmp_path, labels, culprit):
    root = tmp_path / "c"
    make_cifar_folder(root)
    rows = np.zeros((5, 3072), np.uint8)
    write_pickle(root / "data_batch_1", {b"data": rows, b"labels": labels})
    rejects(lambda: read_cifar10(root), DataLayoutError, "data_batch_1", culprit, unchanged=root)


@bad_input(
    "a CIFAR batch file with 0 rows (an empty `data` array, no labels)",
    "DataLayoutError naming the file: the batch is empty",
)
def test_an_empty_cifar_batch_is_refused(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    empty = {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}
    (root / "data_batch_3").write_bytes(pickle.dumps(empty, protocol=4))  # protocol 2 cannot
    rejects(lambda: read_cifar10(root), DataLayoutError, "data_batch_3", "0 rows", unchanged=root)


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(read_cifar10, id="load"),
        pytest.param(lambda root: Cifar10Dataset(str(root)).check(), id="check"),
    ],
)
@bad_input(
    "a `data_batch_1` that is a folder",
    "DataLayoutError naming it: a folder, not a batch file (from check() and load())",
)
def test_cifar_batch_that_is_a_folder(tmp_path, action):
    root = tmp_path / "c"
    make_cifar_folder(root)
    (root / "data_batch_1").unlink()
    (root / "data_batch_1").mkdir()
    rejects(lambda: action(root), DataLayoutError, "data_batch_1", "is a folder", unchanged=root)


@bad_input(
    "a `test_batch` that is a named pipe",
    "DataLayoutError naming it: not a regular file; it is never opened (it would block)",
)
def test_cifar_batch_that_is_a_pipe(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    (root / "test_batch").unlink()
    os.mkfifo(root / "test_batch")
    rejects(lambda: read_cifar10(root), DataLayoutError, "test_batch", "not a regular file")


@bad_input(
    "a truncated CIFAR-10 batch file",
    "DataLayoutError naming the file: not a CIFAR-10 batch file",
)
def test_cifar_truncated_batch(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    path = root / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    rejects(lambda: read_cifar10(root), DataLayoutError, "data_batch_2", unchanged=root)


def test_cifar_batch_names_are_read_in_numeric_order_and_backups_ignored(tmp_path, caplog):
    root = tmp_path / "c"
    parts, _ = make_cifar_folder(root, sizes=(1,) * 10)
    shutil.copy(root / "data_batch_1", root / "data_batch_1.bak")
    with caplog.at_level(logging.WARNING, logger="ieu_potion.data.cifar10"):
        data = read_cifar10(root)
    np.testing.assert_array_equal(data["train"].images, np.concatenate([p[0] for p in parts]))
    assert "data_batch_1.bak" in caplog.text


# ---------------------------------------------------------------------- image folders


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(
            20_000,
            20_000,
            marks=bad_input(
                "a PNG declaring 20000 x 20000 px (a decompression bomb)",
                "DataLayoutError naming the file and the 64 Mi pixel limit; not decoded",
            ),
            id="pillow-limit",
        ),
        pytest.param(
            10_000,
            10_000,
            marks=bad_input(
                "a PNG declaring 10000 x 10000 px (where Pillow only warns)",
                "DataLayoutError naming the file and the 64 Mi pixel limit; not decoded",
            ),
            id="pillow-warning",
        ),
        pytest.param(
            9000,
            9000,
            marks=bad_input(
                "a PNG declaring 9000 x 9000 px (81 Mpx, under Pillow's own limit)",
                "DataLayoutError naming the file and the 64 Mi pixel limit; not decoded",
            ),
            id="project-limit",
        ),
    ],
)
def test_image_over_the_pixel_limit(tmp_path, width, height):
    root = image_folder(tmp_path / "d")
    bomb = root / "train" / "a" / "bomb.png"
    bomb.write_bytes(png_bytes(width, height, 1, 0, b"\x00"))
    assert bomb.stat().st_size < 100
    rejects(
        lambda: read_train(root),
        DataLayoutError,
        str(bomb),
        "64 Mi",
        unchanged=root,
    )


@bad_input(
    "an image file larger than 128 MiB",
    "DataLayoutError naming the file and the 128 MiB limit; the file is not opened",
)
def test_image_file_over_the_byte_limit(tmp_path):
    root = image_folder(tmp_path / "d")
    big = root / "train" / "b" / "big.png"
    sparse_file(big, folders.MAX_IMAGE_BYTES + 1)
    rejects(lambda: read_train(root), DataLayoutError, str(big), "128 MiB", unchanged=root)


@bad_input(
    "a truncated PNG (valid header, data cut short)",
    "DataLayoutError naming the file: cannot read image",
)
def test_truncated_png(tmp_path):
    root = image_folder(tmp_path / "d")
    path = root / "train" / "a" / "cut.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buffer, "PNG"
    )
    path.write_bytes(buffer.getvalue()[:2000])
    rejects(lambda: read_train(root), DataLayoutError, str(path), "cannot read", unchanged=root)


@bad_input(
    "a 16-bit greyscale PNG (values 65535 and 32768)",
    "read, scaled to 8 bit by its bit depth: 255 and 128, not clipped to 255",
)
def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    pixels = np.array([[65535, 32768], [32768, 65535]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    root = single_image_folder(tmp_path / "d", "grey16.png", buffer.getvalue())
    image = read_image_under_test(root, size=8)  # bilinear upsampling keeps corners
    assert image[0, 0].tolist() == [255, 255, 255]
    assert image[0, 7].tolist() == [128, 128, 128]


@bad_input(
    "a 16-bit RGB PNG (values 65535, 32768, 0)",
    "read, scaled to 8 bit: 255, 128, 0",
)
def test_16_bit_rgb_png_is_scaled(tmp_path):
    row = struct.pack(">6H", 65535, 32768, 0, 65535, 32768, 0)
    raw = (b"\x00" + row) * 2
    root = single_image_folder(tmp_path / "d", "rgb16.png", png_bytes(2, 2, 16, 2, raw))
    image = read_image_under_test(root, size=8)
    assert image[0, 0].tolist() == [255, 128, 0]


@bad_input(
    "a floating-point TIFF",
    "DataLayoutError naming the file: floating-point pixels have no known range",
)
def test_float_tiff_is_refused(tmp_path):
    root = image_folder(tmp_path / "d")
    path = root / "train" / "a" / "float.tif"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(path)
    rejects(lambda: read_train(root), DataLayoutError, str(path), "floating-point", unchanged=root)


@bad_input(
    "a JPEG whose EXIF orientation says rotate 90 degrees",
    "read upright: rotated by its EXIF orientation before resizing",
)
def test_exif_orientation_is_applied_before_resizing(tmp_path):
    # Stored 32 wide x 16 high, red left and blue right; orientation 6 means "rotate 90
    # degrees clockwise to display", so upright the red half is on top.
    stored = Image.new("RGB", (32, 16), (255, 0, 0))
    stored.paste((0, 0, 255), (16, 0, 32, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)
    root = single_image_folder(tmp_path / "d", "rotated.jpg", buffer.getvalue())
    image = read_image_under_test(root, size=16).astype(int)
    top, bottom = image[2, 8], image[13, 8]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


@bad_input(
    "a hidden folder (`.ipynb_checkpoints/`) beside the class folders",
    "skipped and logged: not a class, its images are not read",
)
def test_hidden_class_folder_is_skipped(tmp_path, caplog):
    root = image_folder(tmp_path / "d")
    hidden = root / "train" / ".ipynb_checkpoints"
    hidden.mkdir()
    (hidden / "junk.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger=FOLDERS_LOG):
        train, test = read_train(root)
    assert train.class_names == ("a", "b") and len(train) + len(test) == 4
    assert ".ipynb_checkpoints" in caplog.text


@bad_input(
    "hidden files in a class folder (macOS `._img.png`, `.DS_Store`)",
    "skipped and logged: not read as images",
)
def test_hidden_files_in_a_class_are_skipped(tmp_path, caplog):
    root = image_folder(tmp_path / "d")
    (root / "train" / "a" / "._img0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / "a" / ".cache").mkdir()
    (root / "train" / "a" / ".cache" / "thumb.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger=FOLDERS_LOG):
        train, test = read_train(root)
    assert len(train) + len(test) == 4
    assert "._img0.png" in caplog.text and ".cache" in caplog.text


@bad_input(
    "a class folder that is a link to another class folder",
    "DataLayoutError naming both folders: the same folder under two labels",
)
def test_class_folder_linked_to_another_class_is_refused(tmp_path):
    root = image_folder(tmp_path / "d")
    (root / "train" / "c").symlink_to(root / "train" / "a", target_is_directory=True)
    rejects(
        lambda: read_train(root),
        DataLayoutError,
        str(root / "train" / "a"),
        str(root / "train" / "c"),
        "same folder",
        unchanged=root,
    )


@bad_input(
    "a class folder that is a link to the split folder itself",
    "DataLayoutError naming the link: it holds every other class",
)
def test_class_folder_linked_to_the_split_is_refused(tmp_path):
    root = image_folder(tmp_path / "d")
    (root / "train" / "all").symlink_to(root / "train", target_is_directory=True)
    rejects(lambda: read_train(root), DataLayoutError, str(root / "train" / "all"), unchanged=root)


@bad_input(
    "a class folder that is a link to a distinct folder outside the data set",
    "read as a class",
)
def test_class_folder_linked_outside_is_read(tmp_path):
    root = image_folder(tmp_path / "d")
    elsewhere = image_folder(tmp_path / "elsewhere", classes=("x",), per_class=3)
    (root / "train" / "c").symlink_to(elsewhere / "train" / "x", target_is_directory=True)
    train, test = read_train(root)
    assert train.class_names == ("a", "b", "c") and len(train) + len(test) == 7


@bad_input(
    "one image file linked twice into one class folder",
    "read once; the duplicate is logged",
)
def test_image_linked_twice_into_one_class_is_read_once(tmp_path, caplog):
    root = image_folder(tmp_path / "d")
    (root / "train" / "a" / "again.png").symlink_to(root / "train" / "a" / "img0.png")
    (root / "train" / "a" / "sub").mkdir()
    (root / "train" / "a" / "sub" / "third.png").symlink_to(root / "train" / "a" / "img0.png")
    with caplog.at_level(logging.WARNING, logger=FOLDERS_LOG):
        train, test = read_train(root)
    assert len(train) + len(test) == 4
    assert "again.png" in caplog.text and "third.png" in caplog.text


@bad_input(
    "one image file linked into two class folders",
    "DataLayoutError naming both paths: the label is ambiguous",
)
def test_image_linked_into_two_classes_is_refused(tmp_path):
    root = image_folder(tmp_path / "d")
    link = root / "train" / "b" / "from_a.png"
    link.symlink_to(root / "train" / "a" / "img1.png")
    rejects(
        lambda: read_train(root),
        DataLayoutError,
        str(root / "train" / "a" / "img1.png"),
        str(link),
        unchanged=root,
    )


@bad_input(
    "a broken link named like an image",
    "DataLayoutError naming the link",
)
def test_broken_image_link_is_refused(tmp_path):
    root = image_folder(tmp_path / "d")
    link = root / "train" / "a" / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    rejects(lambda: read_train(root), DataLayoutError, str(link), "broken link", unchanged=root)


@bad_input(
    "a named pipe with an image suffix",
    "DataLayoutError naming it: not a regular file; never opened (it would block)",
)
def test_pipe_named_like_an_image_is_refused(tmp_path):
    root = image_folder(tmp_path / "d")
    pipe = root / "train" / "a" / "pipe.png"
    os.mkfifo(pipe)
    rejects(lambda: read_train(root), DataLayoutError, str(pipe), "not a regular file")


# ------------------------------------------------------------------- models, codec

SPEC = ModelSpec("resnet10t", 3)


@pytest.fixture
def saved_model(tmp_path):
    folder = tmp_path / "model"
    save_model(build_model(SPEC), folder)
    return folder


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@bad_input(
    "a truncated `model.safetensors`",
    "ArtifactError (a DataLayoutError) naming the file: not a readable safetensors file",
)
def test_truncated_model_weights(saved_model):
    truncate(saved_model / "model.safetensors")
    rejects(
        lambda: load_model(saved_model),
        ArtifactError,
        str(saved_model / "model.safetensors"),
        "not a readable safetensors file",
        unchanged=saved_model,
    )


@bad_input(
    "a model folder with `model.safetensors` but no `spec.json`",
    "ArtifactError naming spec.json: an interrupted save; rerun the node that writes it",
)
def test_model_weights_without_spec(saved_model):
    (saved_model / "spec.json").unlink()
    dataset = ModelDataset(filepath=str(saved_model))
    assert not dataset.exists()
    rejects(
        dataset.load,
        DatasetError,  # Kedro wraps every load error, keeping the message
        str(saved_model / "spec.json"),
        "missing: an interrupted save",
        "rerun the node",
        unchanged=saved_model,
    )
    rejects(lambda: load_model(saved_model), ArtifactError, "interrupted save")


@pytest.mark.parametrize(
    ("spec_text", "culprit"),
    [
        pytest.param(
            '{"name": "resnet10t", "num_cl',
            "not readable JSON",
            marks=bad_input(
                "a truncated `spec.json`", "ArtifactError naming the file: not readable JSON"
            ),
            id="truncated",
        ),
        pytest.param(
            '{"name": "resnet10t", "num_classes": "3", "kwargs": {}, "image_size": null}',
            "num_classes",
            marks=bad_input(
                "a `spec.json` with a field of the wrong type",
                "ArtifactError naming the file and the field",
            ),
            id="wrong-type",
        ),
        pytest.param(
            '{"name": "resnet99", "num_classes": 3, "kwargs": {}, "image_size": null}',
            "unknown model 'resnet99'",
            marks=bad_input(
                "a `spec.json` naming a model timm does not know",
                "ArtifactError naming the file and the model name",
            ),
            id="unknown-model",
        ),
    ],
)
def test_bad_model_spec(saved_model, spec_text, culprit):
    (saved_model / "spec.json").write_text(spec_text, encoding="utf-8")
    rejects(
        lambda: load_model(saved_model),
        ArtifactError,
        str(saved_model / "spec.json"),
        culprit,
        unchanged=saved_model,
    )


@bad_input(
    "`model.safetensors` of another network than `spec.json` describes",
    "ArtifactError naming both files: they come from different saves",
)
def test_model_weights_that_do_not_fit_the_spec(saved_model):
    save_file({"fc.weight": torch.zeros(2, 2)}, saved_model / "model.safetensors")
    rejects(
        lambda: load_model(saved_model),
        ArtifactError,
        str(saved_model / "model.safetensors"),
        str(saved_model / "spec.json"),
        unchanged=saved_model,
    )


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param(
            ".safetensors",
            marks=bad_input(
                "a truncated `.safetensors` checkpoint (weight source 'checkpoint')",
                "ArtifactError naming the path: not a readable safetensors file",
            ),
        ),
        pytest.param(
            ".pth",
            marks=bad_input(
                "a truncated `.pth` checkpoint (weight source 'checkpoint')",
                "ArtifactError naming the path: cannot be read as a state dict",
            ),
        ),
    ],
)
def test_truncated_checkpoint(tmp_path, suffix):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    path = folder / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in build_model(SPEC).state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, path)
    truncate(path)
    rejects(lambda: read_state_dict(path), ArtifactError, str(path), unchanged=folder)


@pytest.fixture
def saved_codec(tmp_path):
    folder = tmp_path / "codec"
    save_codec(StegaCodec(CodecConfig(bits=8, width=8), (16, 16)), folder)
    return folder


@bad_input(
    "a corrupted `codec.safetensors` (ISSBA codec)",
    "ArtifactError naming the file: not a readable safetensors file",
)
def test_corrupted_codec_weights(saved_codec):
    path = saved_codec / "codec.safetensors"
    path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:])
    rejects(
        lambda: load_codec(saved_codec),
        ArtifactError,
        str(path),
        "not a readable safetensors file",
        unchanged=saved_codec,
    )


@bad_input(
    "a codec folder with `codec.safetensors` but no `codec.json`",
    "ArtifactError naming codec.json: an interrupted save; rerun the node that writes it",
)
def test_codec_weights_without_settings(saved_codec):
    (saved_codec / "codec.json").unlink()
    rejects(
        StegaCodecDataset(filepath=str(saved_codec)).load,
        DatasetError,
        str(saved_codec / "codec.json"),
        "interrupted save",
        unchanged=saved_codec,
    )


@bad_input(
    "a `codec.json` whose settings do not fit the codec's weights",
    "ArtifactError naming both files",
)
def test_codec_settings_that_do_not_fit_the_weights(saved_codec):
    spec = saved_codec / "codec.json"
    spec.write_text(spec.read_text().replace('"width": 8', '"width": 16'))
    rejects(
        lambda: load_codec(saved_codec),
        ArtifactError,
        str(saved_codec / "codec.safetensors"),
        str(spec),
        unchanged=saved_codec,
    )


def _npz(members: dict[str, bytes]) -> bytes:
    """An .npz archive of raw .npy members, compressed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@bad_input(
    "an image set `.npz` whose array header claims 10^13 elements (about 80 TB)",
    "ValueError naming the file, the member and the declared shape; nothing allocated",
)
def test_an_npz_header_that_claims_more_than_the_member_holds_is_refused(tmp_path):
    lying = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**13,)}
    np.lib.format.write_array_header_1_0(lying, header)
    lying.write(b"\0" * 64)
    path = tmp_path / "poisoned_train.npz"
    path.write_bytes(_npz({"images.npy": lying.getvalue()}))
    with pytest.raises(ValueError, match=r"member 'images.npy'.*shape \(10000000000000,\)"):
        ImageSet.load(path)


@bad_input(
    "an `.npz` zip bomb (a small file whose arrays expand past the limit)",
    "ValueError naming the file and the limit, before any array is read",
)
def test_an_npz_that_expands_past_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ieu_io, "NPZ_FLOOR_BYTES", 1024)  # the floor for small files
    zeros = _npy(np.zeros(2**20, dtype=np.uint8))  # 1 MiB of zeros: about 1 KiB compressed
    path = tmp_path / "subsets.npz"
    path.write_bytes(_npz({"share_1.npy": zeros}))
    assert path.stat().st_size * ieu_io.NPZ_MAX_EXPANSION < 2**20
    with pytest.raises(DatasetError, match="would expand to over"):  # Kedro wraps loads
        ArraysDataset(filepath=str(path)).load()
    fine = tmp_path / "fine.npz"
    fine.write_bytes(_npz({"share_1.npy": _npy(np.arange(1000))}))
    assert ArraysDataset(filepath=str(fine)).load()["share_1"].tolist() == list(range(1000))


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        pytest.param(
            {"checkpoint_path": "/etc/passwd"},
            "may not set 'checkpoint_path'",
            marks=bad_input(
                "a saved model's `spec.json` whose kwargs name a `checkpoint_path`",
                "ArtifactError naming the spec: the kwarg is refused; timm never opens the file",
            ),
            id="checkpoint_path",
        ),
        pytest.param(
            {"pretrained": True},
            "may not set 'pretrained'",
            marks=bad_input(
                "a saved model's `spec.json` with `pretrained: true` in its kwargs",
                "ArtifactError naming the spec: nothing is downloaded",
            ),
            id="pretrained",
        ),
        pytest.param(
            {"global_pool": {"nested": 1}},
            "'global_pool' = {'nested': 1}",
            marks=bad_input(
                "a saved model's kwargs holding a nested object",
                "ArtifactError naming the spec and the kwarg",
            ),
            id="nested",
        ),
    ],
)
def test_a_spec_that_would_make_timm_read_files_is_refused(tmp_path, kwargs, culprit):
    folder = tmp_path / "m"
    save_model(build_model(ModelSpec("resnet10t", 4, {}, 16)), folder)
    spec = json.loads((folder / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps({**spec, "kwargs": kwargs}))
    rejects(lambda: load_model(folder), ArtifactError, "spec.json", culprit, unchanged=folder)


@bad_input(
    "a saved model's `spec.json` edited to a 64-block ViT of width 8192 (8 GB of weights)",
    "ArtifactError naming both files before any weight is allocated: the safetensors "
    "header's shapes are compared with a meta-device build",
)
def test_a_spec_far_larger_than_its_weights_is_refused_before_allocating(tmp_path):
    folder = tmp_path / "m"
    small = {"patch_size": 4, "embed_dim": 24, "depth": 1, "num_heads": 2}
    save_model(build_model(ModelSpec("vit_tiny_patch16_224", 4, small, 16)), folder)
    spec = json.loads((folder / "spec.json").read_text())
    huge = {"patch_size": 4, "embed_dim": 8192, "depth": 64, "num_heads": 8}
    (folder / "spec.json").write_text(json.dumps({**spec, "kwargs": huge}))
    rejects(
        lambda: load_model(folder),
        ArtifactError,
        "model.safetensors",
        "spec.json",
        "differ in name or shape",
        unchanged=folder,
    )


def test_model_kwargs_in_the_parameters_follow_the_same_rule():
    from ieu_potion.training.setup import ModelParams

    with pytest.raises(ValueError, match="may not set 'pretrained'"):
        ModelParams(name="resnet10t", kwargs={"pretrained": True})
    with pytest.raises(ValueError, match="only global_pool, stem_type"):
        ModelParams(name="resnet10t", kwargs={"drop_block": "x"})
