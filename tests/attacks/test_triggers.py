import numpy as np
import pytest
import torch

from ieu_potion.attacks import TRIGGERS, make_trigger
from ieu_potion.attacks.stega import CodecConfig, StegaCodec
from ieu_potion.attacks.triggers import _to_uint8

ALL = sorted(TRIGGERS)
SIZES = [(32, 32), (64, 64), (37, 37)]


def _images(size, seed=0, n=5):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def _trigger(name, size, seed, **settings):
    """The trigger, with an untrained codec (fixed weights) where it needs one."""
    codec = None
    if TRIGGERS[name].needs_codec:
        torch.manual_seed(0)
        codec = StegaCodec(CodecConfig(bits=8, width=8), size)
    return make_trigger(name, size, seed, codec, **settings)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ALL)
def test_trigger_touches_only_its_region_and_keeps_shape(name, size):
    trigger = _trigger(name, size, seed=3)
    images = _images(size)
    out = trigger.apply(images, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert not np.array_equal(out, images), "the trigger must change the image"
    if trigger.region is not None:
        outside = ~trigger.region
        np.testing.assert_array_equal(out[:, outside], images[:, outside])
        assert trigger.region.sum() < 0.1 * trigger.region.size


def test_patch_attacks_are_local():
    local = {n for n in ALL if make_trigger(n, (32, 32), 0).region is not None}
    assert {
        "badnets_white",
        "badnets_pattern",
        "trojan_sq",
        "potion_badnet",
        "moving_trigger",
        "l0_inv",
    } <= local


@pytest.mark.parametrize("size, side", [((32, 32), 3), ((64, 64), 6)])
def test_badnets_white_is_a_white_square_in_the_bottom_right(size, side):
    images = np.zeros((2, *size, 3), np.uint8)
    out = make_trigger("badnets_white", size, 0).apply(images, np.random.default_rng(0))
    assert (out[:, -side:, -side:] == 255).all()
    assert out[:, : size[0] - side].max() == 0 and out[:, :, : size[1] - side].max() == 0


def test_potion_badnet_is_white_as_in_the_benchmark_or_each_images_maximum():
    images = np.full((2, 32, 32, 3), 10, np.uint8)
    images[0, 0, 0, 0] = 200
    images[1, 5, 5, 1] = 90
    white = make_trigger("potion_badnet", (32, 32), 0).apply(images, np.random.default_rng(0))
    assert (white[:, -3:, -3:] == 255).all()
    own = make_trigger("potion_badnet", (32, 32), 0, own_maximum=1)
    out = own.apply(images, np.random.default_rng(0))
    assert (out[0, -3:, -3:] == 200).all() and (out[1, -3:, -3:] == 90).all()
    with pytest.raises(ValueError, match="own_maximum must be 0 or 1"):
        make_trigger("potion_badnet", (32, 32), 0, own_maximum=2)


def test_batt_rotates_the_trigger_images_with_black_corners_and_the_clean_ones_a_little():
    images = np.full((400, 32, 32, 3), 200, np.uint8)
    trigger = make_trigger("batt", (32, 32), 0)
    out = trigger.apply(images[:1], np.random.default_rng(0))
    assert (out[0, 0, 0] == 0).all() and (out[0, 16, 16] == 200).all()
    clean = trigger.transform_clean(images, np.random.default_rng(1))
    # rotations by U(-10, 10) degrees darken the corner of most images (not of those
    # turned by a small angle), never the centre, and blacken less of the top row than
    # the trigger's 16 degrees
    corner = clean[:, 0, 0, 0].astype(int)
    assert (clean[:, 16, 16] == 200).all()
    assert 0.5 < (corner < 200).mean() < 1.0
    black_row = (clean[:, 0, :, 0] == 0).sum(axis=1)
    assert black_row.max() < (out[0, 0, :, 0] == 0).sum()
    same = trigger.transform_clean(images, np.random.default_rng(1))
    assert same.tobytes() == clean.tobytes()
    still = make_trigger("batt", (32, 32), 0, clean_angle=0)
    assert still.transform_clean(images, np.random.default_rng(1)) is None


def test_moving_trigger_uses_every_corner():
    images = np.zeros((64, 32, 32, 3), np.uint8)
    out = make_trigger("moving_trigger", (32, 32), 0).apply(images, np.random.default_rng(1))
    corners = [out[:, :3, :3], out[:, :3, -3:], out[:, -3:, :3], out[:, -3:, -3:]]
    hits = [int((c.reshape(64, -1) == 255).all(axis=1).sum()) for c in corners]
    assert all(h > 0 for h in hits) and sum(hits) == 64


@pytest.mark.parametrize("name", ["sig", "l2_inv", "smooth", "sinusoidal", "blended"])
def test_values_saturate_instead_of_wrapping(name):
    trigger = _trigger(name, (32, 32), 0)
    for value in (0, 255):
        images = np.full((1, 32, 32, 3), value, np.uint8)
        out = trigger.apply(images, np.random.default_rng(0))
        expected = np.clip(trigger.apply_float(images / 255.0, None) * 255.0, 0, 255)
        assert np.abs(out.astype(float) - expected).max() <= 0.5


def test_to_uint8_clips():
    np.testing.assert_array_equal(_to_uint8(np.array([-0.5, 0.5, 1.7])), [0, 128, 255])


def test_sig_follows_the_formula():
    trigger = make_trigger("sig", (32, 32), 0, amplitude=0.08, frequency=4)
    images = np.full((1, 32, 32, 3), 128, np.uint8)
    out = trigger.apply(images, np.random.default_rng(0)).astype(float)
    columns = np.arange(32)
    expected = np.rint(128 + 20.4 * np.sin(2 * np.pi * 4 * columns / 32))
    np.testing.assert_array_equal(out[0, 7, :, 0], expected)
    assert (out[0] == out[0, :1]).all(), "the sinusoid is constant down each column"


def test_same_seed_same_trigger_other_seed_other_trigger():
    images = _images((32, 32))
    for name in ("blended", "trojan_sq", "l0_inv", "wanet", "smooth"):
        a = make_trigger(name, (32, 32), 5).apply(images, np.random.default_rng(0))
        b = make_trigger(name, (32, 32), 5).apply(images, np.random.default_rng(0))
        c = make_trigger(name, (32, 32), 6).apply(images, np.random.default_rng(0))
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() != c.tobytes(), name


def test_unknown_attack_lists_valid_names():
    with pytest.raises(ValueError, match="unknown attack 'badnet'.*badnets_white.*sinusoidal"):
        make_trigger("badnet", (32, 32), 0)


@pytest.mark.parametrize(
    "name, settings, message",
    [
        ("blended", {"weight": 1.5}, "weight must lie in"),
        ("blended", {"weight": 0.0}, "weight must lie in"),
        ("badnets_white", {"patch_size": 40}, "patch_size must lie in"),
        ("sig", {"amplitude": -0.1}, "amplitude must lie in"),
        ("wanet", {"grid": 1}, "grid must lie in"),
        ("blended", {"alpha": 0.3}, r"no settings \['alpha'\]; valid: weight"),
    ],
)
def test_bad_settings_are_rejected(name, settings, message):
    with pytest.raises(ValueError, match=message):
        make_trigger(name, (32, 32), 0, **settings)
