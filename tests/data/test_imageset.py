import os

import numpy as np
import pytest

from ieu_potion.adapters.datasets import ArraysDataset, ImageSetDataset
from ieu_potion.data import ImageSet


def test_npz_round_trip_keeps_ground_truth(tmp_path, small_set):
    poisoned = np.zeros(len(small_set), bool)
    poisoned[[2, 5]] = True
    data = ImageSet(
        images=small_set.images,
        labels=small_set.labels,
        true_labels=small_set.labels,
        poisoned=poisoned,
        attack=np.where(poisoned, "blended", ""),
        class_names=small_set.class_names,
    )
    dataset = ImageSetDataset(filepath=str(tmp_path / "sub" / "set.npz"))
    dataset.save(data)
    loaded = dataset.load()
    assert loaded.to_npz_bytes() == data.to_npz_bytes()
    assert list(loaded.attack[[1, 2]]) == ["", "blended"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["set.npz"], "no temp file left"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "sub" / "set.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_object_arrays_are_never_unpickled(tmp_path, small_set):
    path = tmp_path / "evil.npz"
    small_set.save(path)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["labels"] = np.array([object()] * len(small_set), dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        ImageSet.load(path)


def test_a_file_that_is_not_an_image_set_is_reported(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="is not an image set: missing arrays"):
        ImageSet.load(tmp_path / "x.npz")


def test_labels_outside_the_classes_are_rejected(small_set):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        ImageSet.clean(small_set.images[:2], [0, 3], ["a", "b", "c"])


def test_arrays_dataset_round_trip(tmp_path):
    dataset = ArraysDataset(filepath=str(tmp_path / "a.npz"))
    dataset.save({"share_0.1": np.array([3, 1]), "one_shot": np.array([3])})
    loaded = dataset.load()
    assert set(loaded) == {"share_0.1", "one_shot"}
    np.testing.assert_array_equal(loaded["share_0.1"], [3, 1])


def stamped_set(small_set, name="blended"):
    from ieu_potion.attacks import AttackConfig, poison_training_set

    params = {"name": name, "target_class": 0, "count": 9, "stamp": "after"}
    return poison_training_set(small_set, AttackConfig.from_params(params))


@pytest.mark.parametrize("name", ["blended", "moving_trigger"])
def test_an_overlay_survives_the_file_and_follows_a_subset(tmp_path, small_set, name):
    data = stamped_set(small_set, name)
    data.save(tmp_path / "set.npz")
    back = ImageSet.load(tmp_path / "set.npz")
    for name in ("alpha", "pattern", "originals"):
        np.testing.assert_array_equal(getattr(back.overlay, name), getattr(data.overlay, name))
    picks = np.array([50, 3, 17, 40, 8, 29])
    part = data.subset(picks)
    stamp = data.stamp_for(picks)
    np.testing.assert_array_equal(stamp.stamped, data.poisoned[picks])
    np.testing.assert_array_equal(part.overlay.originals, stamp.originals)
    np.testing.assert_array_equal(stamp.originals, small_set.images[picks[data.poisoned[picks]]])
    rows = np.cumsum(data.poisoned)[picks[data.poisoned[picks]]] - 1
    per_sample = data.overlay.alpha[rows] if data.overlay.per_sample else data.overlay.alpha
    np.testing.assert_array_equal(stamp.alpha, per_sample)
    np.testing.assert_array_equal(part.overlay.alpha, per_sample)
    assert small_set.stamp_for(picks) is None
    with pytest.raises(ValueError, match="2 unstamped images for 9 poisoned"):
        ImageSet(**{**vars(data), "overlay": data.overlay.rows(np.arange(2))})
    if data.overlay.per_sample:
        with pytest.raises(ValueError, match=r"alpha has shape \(9, 32, 32, 1\), expected \(2,"):
            type(data.overlay)(data.overlay.alpha, data.overlay.pattern, data.overlay.originals[:2])
