"""ISSBA's codec: bits round-trip on held-out images, the residual's bound, persistence,
and the seeded, sample-specific poisoning it drives."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ieu_potion.adapters.datasets import StegaCodecDataset
from ieu_potion.attacks import AttackConfig, make_trigger, poison_training_set
from ieu_potion.attacks.stega import (
    CodecConfig,
    StegaCodec,
    codec_metrics,
    decode_images,
    encode_images,
    psnr,
    train_codec,
)
from ieu_potion.data import ImageSet

SIZE = (16, 16)


def smooth_images(n, seed):
    """Natural-looking stand-ins: smooth random colour fields, uint8 (n, 16, 16, 3)."""
    coarse = torch.from_numpy(np.random.default_rng(seed).uniform(size=(n, 3, 4, 4)))
    fine = F.interpolate(coarse.float(), size=SIZE, mode="bicubic", align_corners=True)
    return (fine.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def codec():
    config = CodecConfig(bits=8, width=16, steps=700, batch_size=32, lr=2e-3, seed=1)
    return train_codec(smooth_images(400, seed=0), config)


def test_bits_round_trip_on_held_out_images_above_95_percent(codec):
    assert codec.metrics["bit_accuracy"] >= 0.95
    unseen = smooth_images(100, seed=7)
    bits = np.random.default_rng(3).integers(0, 2, (100, 8))
    measured = codec_metrics(codec, unseen, bits)
    assert measured["bit_accuracy"] >= 0.95
    bound = codec.config.bound
    assert measured["linf"] <= round(bound * 255)
    # a residual within the bound everywhere: PSNR at least 20 log10(1 / bound) dB
    assert 20 * np.log10(1 / bound) <= measured["psnr_db"] < 80


@pytest.mark.parametrize("bound", [0.02, 0.1])
def test_the_residual_never_exceeds_its_bound_even_saturated(bound):
    torch.manual_seed(0)
    codec = StegaCodec(CodecConfig(bits=8, width=8, bound=bound), SIZE)
    with torch.no_grad():
        codec.up[-1].weight.mul_(1e3)  # drive tanh into saturation
    images = smooth_images(20, seed=2)
    encoded = encode_images(codec, images, np.ones(8, dtype=np.uint8))
    change = np.abs(encoded.astype(int) - images.astype(int)).max()
    assert 0 < change <= np.ceil(bound * 255)


def test_a_saved_codec_reloads_with_the_same_outputs_and_metrics(codec, tmp_path):
    dataset = StegaCodecDataset(filepath=str(tmp_path / "codec"))
    assert not dataset.exists()
    dataset.save(codec)
    loaded = dataset.load()
    images = smooth_images(10, seed=4)
    bits = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=np.uint8)
    assert (
        encode_images(loaded, images, bits).tobytes()
        == encode_images(codec, images, bits).tobytes()
    )
    assert loaded.metrics == codec.metrics and loaded.config == codec.config


def test_issba_poisoning_is_seeded_byte_identical_and_sample_specific(codec):
    images = smooth_images(60, seed=5)
    data = ImageSet.clean(images, np.repeat(np.arange(10), 6), [f"c{i}" for i in range(10)])
    config = AttackConfig.from_params({"name": "issba", "target_class": 1, "rate": 0.2})
    first = poison_training_set(data, config, codec)
    second = poison_training_set(data, config, codec)
    assert first.images.tobytes() == second.images.tobytes()
    chosen = first.poisoned
    residuals = first.images[chosen].astype(int) - images[chosen].astype(int)
    assert (residuals != 0).any(axis=(1, 2, 3)).all()
    assert not np.array_equal(residuals[0], residuals[1]), "one residual per image"
    secret = make_trigger("issba", SIZE, 0, codec).secret
    assert (decode_images(codec, first.images[chosen]) == secret).mean() >= 0.95
    other = AttackConfig.from_params({"name": "issba", "target_class": 1, "rate": 0.2, "seed": 1})
    assert make_trigger("issba", SIZE, 1, codec).secret.tobytes() != secret.tobytes()
    assert poison_training_set(data, other, codec).images.tobytes() != first.images.tobytes()


def test_issba_without_or_with_a_mismatched_codec_says_what_is_missing(codec):
    with pytest.raises(ValueError, match="issba needs the steganography codec.*stega_codec"):
        make_trigger("issba", SIZE, 0).apply(smooth_images(2, 0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="trained on 16x16 images; these are 32x32"):
        make_trigger("issba", (32, 32), 0, codec)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"bits": 0}, "stega_codec.bits: .* greater than or equal to 1, got 0"),
        ({"bound": 0.0}, "stega_codec.bound: .* greater than 0, got 0.0"),
        ({"steps": 2.5}, "stega_codec.steps: Input should be a valid integer, got 2.5"),
        ({"lr": float("nan")}, "stega_codec.lr: Input should be a finite number, got nan"),
        ({"holdout": 1.0}, "stega_codec.holdout: .* less than 1, got 1.0"),
        ({"epochs": 3}, "stega_codec.epochs: unknown setting; valid: batch_size, bits"),
    ],
)
def test_bad_codec_settings_name_the_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        CodecConfig.from_params(params)


def test_psnr_of_identical_and_shifted_images():
    a = np.full((2, 4, 4, 3), 100, np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255), abs=1e-9)


def test_training_writes_no_progress_bar_frames_into_a_redirected_log(capfd):
    """A progress bar on a non-terminal writes nothing (not hundreds of \\r frames)."""
    config = CodecConfig(bits=8, width=8, steps=3, batch_size=8, seed=1)
    train_codec(smooth_images(20, seed=0), config)
    err = capfd.readouterr().err
    assert "\r" not in err and "ISSBA codec" not in err
