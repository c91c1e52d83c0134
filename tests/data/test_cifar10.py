import os
import pickle

import numpy as np
import pytest

from ieu_potion.data import DataLayoutError
from ieu_potion.data.cifar10 import most_train_images, read_cifar10


def write_batch(path, images_hwc, labels):
    """Write a batch the way the CIFAR-10 python files are laid out (bytes keys)."""
    rows = images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1)
    batch = {
        b"batch_label": b"fabricated",
        b"labels": list(map(int, labels)),
        b"data": rows,
        b"filenames": [b"x.png"] * len(labels),
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def make_cifar_folder(root, sizes=(5, 3), test=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, n in enumerate(sizes, start=1):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        write_batch(root / f"data_batch_{i}", images, labels)
        parts.append((images, labels))
    test_images = rng.integers(0, 256, (test, 32, 32, 3), dtype=np.uint8)
    write_batch(root / "test_batch", test_images, rng.integers(0, 10, test))
    return parts, test_images


def test_reads_a_subset_of_batches_of_any_length(tmp_path):
    parts, test_images = make_cifar_folder(tmp_path / "cifar-10-batches-py")
    data = read_cifar10(tmp_path / "cifar-10-batches-py")
    assert len(data["train"]) == 8 and len(data["test"]) == 4
    np.testing.assert_array_equal(data["train"].images[:5], parts[0][0])
    np.testing.assert_array_equal(data["train"].images[5:], parts[1][0])
    np.testing.assert_array_equal(data["train"].labels[:5], parts[0][1])
    np.testing.assert_array_equal(data["test"].images, test_images)
    assert data["train"].class_names[0] == "airplane" and data["train"].num_classes == 10
    bound = most_train_images(tmp_path / "cifar-10-batches-py")  # before any batch is read
    assert 8 <= bound < 16  # an upper bound: each file's labels and keys add a row or two


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_batch_that_would_run_code_is_refused(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    with open(root / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(DataLayoutError, match="refusing to load global"):
        read_cifar10(root)


def test_missing_folder_names_the_expected_layout(tmp_path):
    with pytest.raises(DataLayoutError, match="does not exist; expected a `cifar-10-batches-py`"):
        read_cifar10(tmp_path / "nowhere")


def test_missing_test_batch_is_reported(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    (root / "test_batch").unlink()
    with pytest.raises(DataLayoutError, match="found 2 data_batch files and no test_batch"):
        read_cifar10(root)


def test_mismatched_label_count_is_reported(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    images = np.zeros((3, 32, 32, 3), np.uint8)
    write_batch(root / "data_batch_2", images, [1, 2])
    with pytest.raises(DataLayoutError, match="3 images but 2 labels"):
        read_cifar10(root)
