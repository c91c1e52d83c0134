import numpy as np
import pytest

from ieu_potion.data.digits import make_digits, train_size


def test_cluttered_digits_shapes_and_determinism():
    a = make_digits(copies=1, test_copies=1, image_size=24, seed=4)
    b = make_digits(copies=1, test_copies=1, image_size=24, seed=4)
    assert a["train"].images.shape[1:] == (24, 24, 3)
    assert len(a["train"]) + len(a["test"]) == 1797
    assert a["train"].to_npz_bytes() == b["train"].to_npz_bytes()
    assert sorted(set(a["test"].labels)) == list(range(10))


def test_copies_multiply_and_clutter_adds_texture():
    plain = make_digits(style="plain", copies=1, test_copies=1)
    clutter = make_digits(copies=2, test_copies=1)
    assert len(clutter["train"]) == 2 * len(plain["train"])
    # known before any image is built, for the run's checks
    assert train_size(copies=2) == len(clutter["train"]) and train_size(copies=1) == 1438
    assert train_size(copies=1, test_fraction=0.5) == 899  # 898.5 test digits round to 898
    # A plain digit sits on a black background; a cluttered one on a photograph.
    assert np.median(plain["train"].images[:, 0, 0]) == 0
    assert np.median(clutter["train"].images[:, 0, 0]) > 20
    assert plain["train"].images.std(axis=(1, 2)).mean() < clutter["train"].images.std() * 2


def test_train_and_test_digits_are_disjoint():
    a = make_digits(style="plain", copies=1, test_copies=1)
    train = {im.tobytes() for im in a["train"].images}
    overlap = sum(im.tobytes() in train for im in a["test"].images)
    # scikit-learn's digits hold a handful of exact duplicates; copies would be many more.
    assert overlap <= 5


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"style": "noisy"}, "unknown digits style 'noisy'; valid styles: plain, cluttered"),
        ({"clutter": 1.5}, "clutter must lie in"),
        ({"copies": 0}, "copies and test_copies must be >= 1"),
        ({"photos": ("astronaut", "moon_landing")}, r"unknown photos \['moon_landing'\]"),
    ],
)
def test_bad_settings_are_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        make_digits(**settings)
