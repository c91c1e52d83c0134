import itertools

import numpy as np
import pytest

from ieu_potion.attacks import (
    AttackConfig,
    discovery_subsets,
    poison_training_set,
    triggered_test_set,
)


def config(**kw):
    return AttackConfig.from_params({"name": "badnets_white", "target_class": 1, **kw})


@pytest.mark.parametrize("rate, expected", [(0.1, 6), (0.25, 15), (0.5, 30)])
def test_poisoned_count_matches_rate_exactly(small_set, rate, expected):
    out = poison_training_set(small_set, config(rate=rate))
    assert out.poisoned.sum() == expected
    assert (out.attack[out.poisoned] == "badnets_white").all()
    assert (out.attack[~out.poisoned] == "").all()


def test_count_instead_of_rate(small_set):
    assert poison_training_set(small_set, config(count=7)).poisoned.sum() == 7


def test_dirty_label_flips_only_non_target_samples(small_set):
    out = poison_training_set(small_set, config(rate=0.2))
    p = out.poisoned
    assert (out.labels[p] == 1).all() and (out.true_labels[p] != 1).all()
    np.testing.assert_array_equal(out.true_labels, small_set.labels)
    np.testing.assert_array_equal(out.labels[~p], small_set.labels[~p])
    np.testing.assert_array_equal(out.images[~p], small_set.images[~p])
    assert all(
        not np.array_equal(a, b) for a, b in zip(out.images[p], small_set.images[p], strict=True)
    )


def test_clean_label_attack_flips_no_label(small_set):
    out = poison_training_set(
        small_set, AttackConfig.from_params({"name": "sig", "target_class": 3, "count": 5})
    )
    np.testing.assert_array_equal(out.labels, small_set.labels)
    assert out.poisoned.sum() == 5 and (out.true_labels[out.poisoned] == 3).all()


@pytest.mark.parametrize("share, expected", [(1.0, 6), (0.5, 3), (0.1, 1)])
def test_sig_poisons_a_share_of_the_target_class(small_set, share, expected):
    cfg = AttackConfig.from_params({"name": "sig", "target_class": 3, "target_share": share})
    out = poison_training_set(small_set, cfg)
    assert out.poisoned.sum() == expected and (out.true_labels[out.poisoned] == 3).all()
    np.testing.assert_array_equal(out.labels, small_set.labels)


def test_batt_rotates_the_clean_training_images_too(small_set):
    cfg = config(name="batt", rate=0.2, seed=4)
    out = poison_training_set(small_set, cfg)
    clean = ~out.poisoned
    changed = (out.images != small_set.images).any(axis=(1, 2, 3))
    assert changed[out.poisoned].all() and changed[clean].mean() > 0.9
    np.testing.assert_array_equal(out.labels[clean], small_set.labels[clean])
    still = config(name="batt", rate=0.2, seed=4, settings={"clean_angle": 0})
    kept = poison_training_set(small_set, still)
    np.testing.assert_array_equal(kept.images[clean], small_set.images[clean])


def test_clean_label_asks_for_too_many(small_set):
    cfg = AttackConfig.from_params({"name": "sig", "target_class": 3, "rate": 0.2})
    with pytest.raises(ValueError, match="asks for 12 .* only 6 target-class images"):
        poison_training_set(small_set, cfg)


def test_same_seed_gives_byte_identical_output(small_set):
    for name in ("badnets_white", "moving_trigger", "wanet", "batt"):
        cfg = config(name=name, rate=0.3, seed=11)
        a = poison_training_set(small_set, cfg).to_npz_bytes()
        b = poison_training_set(small_set, cfg).to_npz_bytes()
        assert a == b
        other = poison_training_set(small_set, config(name=name, rate=0.3, seed=12))
        assert other.to_npz_bytes() != a


def test_triggered_test_keeps_true_labels_and_drops_target_class(small_set):
    out = triggered_test_set(small_set, config())
    assert len(out) == 54 and (out.true_labels != 1).all()
    np.testing.assert_array_equal(out.labels, out.true_labels)
    assert out.poisoned.all()
    assert (out.images[:, -3:, -3:] == 255).all()


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"name": "badnets_white", "rate": 1.2},
            "attack.rate: Input should be less than 1, got 1.2",
        ),
        ({"name": "badnets_white", "rate": 0.0}, "attack.rate: .* greater than 0"),
        ({"name": "badnets_white", "rate": 0.1, "count": 4}, "exactly one of rate, count and"),
        ({"name": "sig", "rate": 0.1, "target_share": 0.5}, "exactly one of rate, count and"),
        ({"name": "badnets_white", "target_share": 0.5}, "target_share applies to clean-label"),
        ({"name": "sig", "target_share": 0.0}, "attack.target_share: .* greater than 0"),
        ({"name": "sig", "target_share": 1.5}, "attack.target_share: .* less than or equal to 1"),
        ({"name": "badnets_white", "count": 0}, "attack.count: .* greater than or equal to 1"),
        (
            {"name": "badnets_white", "target_class": -1},
            "attack.target_class: .* greater than or equal to 0",
        ),
        (
            {"name": "nope"},
            "attack.name: .*unknown attack 'nope'; valid attacks: 'badnets_white', .*'issba'",
        ),
        ({"rate": 0.1}, "attack.name: Field required"),
        (
            {"name": "blended", "blend": 0.2},
            "attack.blend: unknown setting; valid: count, name, rate",
        ),
        ({"name": "blended", "settings": {"weight": 2}}, "weight must lie in"),
    ],
)
def test_bad_attack_parameters_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        AttackConfig.from_params(params)


def test_target_class_must_exist_in_the_data(small_set):
    with pytest.raises(ValueError, match=r"target_class 10 is not a class id .*\(0\.\.9\)"):
        poison_training_set(small_set, config(target_class=10))


def test_discovery_subsets_are_nested_and_poisoned(small_set):
    poisoned = poison_training_set(small_set, config(rate=0.5))
    shares = [0.1, 0.3, 0.5, 1.0]
    subsets = discovery_subsets(poisoned, shares, seed=0)
    sizes = [len(subsets[f"share_{s:g}"]) for s in shares]
    assert sizes == [3, 9, 15, 30]
    for small, large in itertools.pairwise(shares):
        assert set(subsets[f"share_{small:g}"]) <= set(subsets[f"share_{large:g}"])
    assert len(subsets["one_shot"]) == 1
    assert set(subsets["one_shot"]) <= set(subsets["share_0.1"])
    assert poisoned.poisoned[subsets["share_1"]].all()
    assert set(subsets["share_1"]) == set(np.flatnonzero(poisoned.poisoned))


def test_discovery_needs_a_poisoned_sample(small_set):
    with pytest.raises(ValueError, match="no poisoned sample"):
        discovery_subsets(small_set, [0.5], seed=0)


def stamped_both_ways(small_set, name, count):
    """The set poisoned by ``name`` with its default stamp order (returned), after checking
    that stamping before the augmentation stores the same images, without an overlay."""
    params = {"name": name, "target_class": 0, "count": count}
    out = poison_training_set(small_set, AttackConfig.from_params(params))
    before = poison_training_set(small_set, AttackConfig.from_params({**params, "stamp": "before"}))
    assert before.overlay is None
    np.testing.assert_array_equal(before.images, out.images)
    return out


def test_stamp_after_keeps_the_unstamped_pixels_for_the_views(small_set):
    """potion_badnet is stamped after the augmentation by default: the stored images carry
    the patch (every unaugmented pass sees it), the overlay keeps the originals."""
    out = stamped_both_ways(small_set, "potion_badnet", 5)
    assert out.overlay is not None
    rows = np.flatnonzero(out.poisoned)
    np.testing.assert_array_equal(out.overlay.originals, small_set.images[rows])
    assert (out.images[rows][:, -3:, -3:] == 255).all()
    assert out.overlay.alpha.sum() == 9 and (out.overlay.alpha[-3:, -3:] == 1).all()
    assert config(rate=0.1).stamp == "before"


def test_moving_trigger_is_stamped_after_each_image_at_its_own_corner(small_set):
    """A trigger drawn per image keeps one blend per poisoned sample: the corner its stored
    image carries, for the views to stamp after the augmentation."""
    out = stamped_both_ways(small_set, "moving_trigger", 12)
    rows = np.flatnonzero(out.poisoned)
    alpha, pattern = out.overlay.alpha, out.overlay.pattern
    assert out.overlay.per_sample and alpha.shape == (12, 32, 32, 1)
    assert (alpha.sum(axis=(1, 2, 3)) == 9).all()
    corners = {tuple(np.argwhere(a[..., 0])[0]) for a in alpha}
    assert len(corners) > 1, "corners are drawn per image"
    blend = (1 - alpha) * out.overlay.originals / 255.0 + alpha * pattern
    np.testing.assert_array_equal(out.images[rows], np.rint(blend * 255).astype(np.uint8))


@pytest.mark.parametrize("name", ["wanet", "sig", "issba"])
def test_only_blends_can_be_stamped_after(name):
    with pytest.raises(ValueError, match="cannot be stamped after.*works for badnets_white"):
        AttackConfig.from_params({"name": name, "stamp": "after"})
    with pytest.raises(ValueError, match="cannot be stamped after"):
        AttackConfig.from_params(
            {"name": "potion_badnet", "stamp": "after", "settings": {"own_maximum": 1}}
        )
