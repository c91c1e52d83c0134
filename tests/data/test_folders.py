import numpy as np
import pytest
from PIL import Image

from ieu_potion.data import DataLayoutError
from ieu_potion.data.folders import extent, read_image_folders
from tests.badinput import bad_input


def make_folder(root, split, classes, per_class=3, nested="", size=(20, 14), suffix=".png"):
    for c, name in enumerate(classes):
        folder = root / split / name / nested
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = (c * 40 % 256, i * 60 % 256, 100)
            Image.new("RGB", size, colour).save(folder / f"img{i}{suffix}")


def test_imagenette_layout_with_val_split(tmp_path):
    make_folder(tmp_path, "train", ["n01", "n02", "n03"], per_class=4)
    make_folder(tmp_path, "val", ["n01", "n03"], per_class=2, suffix=".jpg")
    data = read_image_folders(tmp_path, image_size=16)
    assert data["train"].images.shape == (12, 16, 16, 3)
    assert data["train"].class_names == ("n01", "n02", "n03")
    assert sorted(set(data["test"].labels)) == [0, 2] and len(data["test"]) == 4
    assert (data["train"].images[data["train"].labels == 1][..., 0] == 40).all()
    assert extent(tmp_path) == (3, 12)


def test_tinyimagenet_style_nested_images_and_holdout(tmp_path):
    make_folder(tmp_path, "train", ["a", "b"], per_class=5, nested="images", suffix=".JPEG")
    data = read_image_folders(tmp_path, image_size=8, test_dir=None, test_fraction=0.2, seed=1)
    assert len(data["train"]) == 8 and len(data["test"]) == 2
    assert extent(tmp_path, test_dir=None, test_fraction=0.2) == (2, 8), "from the listing"


def test_gtsrb_style_ppm_files(tmp_path):
    make_folder(tmp_path, "Final_Training/Images", ["00000", "00001"], suffix=".ppm")
    data = read_image_folders(tmp_path, 12, train_dir="Final_Training/Images", test_dir=None)
    assert data["train"].num_classes == 2


def test_empty_class_folder_is_reported(tmp_path):
    make_folder(tmp_path, "train", ["a", "b"])
    make_folder(tmp_path, "val", ["a", "b"])
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(DataLayoutError, match=r"class folder .*train/c' holds no image files"):
        read_image_folders(tmp_path, 16)


def test_test_split_with_unknown_classes_is_reported(tmp_path):
    make_folder(tmp_path, "train", ["a", "b"])
    make_folder(tmp_path, "val", ["a", "z"])
    with pytest.raises(DataLayoutError, match=r"has classes \['z'\] that .*train lacks"):
        read_image_folders(tmp_path, 16)


def test_missing_split_folder_names_the_layout(tmp_path):
    make_folder(tmp_path, "train", ["a"])
    with pytest.raises(DataLayoutError, match=r"val does not exist; expected a folder holding"):
        read_image_folders(tmp_path, 16)


def test_flat_folder_without_classes_is_reported(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "x.png")
    with pytest.raises(DataLayoutError, match="has no class subfolders"):
        read_image_folders(tmp_path, 16, test_dir=None)


def test_unreadable_image_is_reported(tmp_path):
    make_folder(tmp_path, "train", ["a"])
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataLayoutError, match="cannot read image .*broken.png"):
        read_image_folders(tmp_path, 16, test_dir=None)


def test_images_are_resized_not_cropped(tmp_path):
    make_folder(tmp_path, "train", ["a"], per_class=2, size=(50, 10))
    data = read_image_folders(tmp_path, 10, test_dir=None, test_fraction=0.5)
    assert data["train"].images.shape[1:] == (10, 10, 3)
    assert np.ptp(data["train"].images[..., 2]) == 0


@bad_input(
    "a class folder whose only image the seeded hold-out puts in the test split",
    "DataLayoutError naming the class, test_fraction and seed, before any training",
)
def test_a_class_left_without_training_images_by_the_hold_out_is_named(tmp_path):
    make_folder(tmp_path, "train", ["many"], per_class=9)
    make_folder(tmp_path, "train", ["lonely"], per_class=1)
    seeds = [
        s
        for s in range(20)
        if 0 in np.random.default_rng(s).permutation(10)[:2]  # "lonely" sorts first: image 0
    ]
    with pytest.raises(DataLayoutError, match=r"class 'lonely' has no training image left"):
        read_image_folders(tmp_path, 8, test_dir=None, test_fraction=0.2, seed=seeds[0])
