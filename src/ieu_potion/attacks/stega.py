"""ISSBA's steganography codec, trained offline on the clean pretraining split.

ISSBA (Li et al., ICCV 2021) hides a fixed bit string in every poisoned image with a
StegaStamp encoder: the trigger is the encoder's residual, different for every image.  The
public StegaStamp weights cannot be downloaded here, and BackdoorBox's training needs LPIPS
(downloaded AlexNet weights), so the codec is trained by a node of the pipeline with the
offline objective BackdoorBench uses: a squared-error term on the residual and the bits'
cross-entropy.

- The encoder maps (image, bits) to a residual.  The bits go through a linear layer to an
  8 x 8 map with three channels, upsampled to the image size (StegaStamp's secret path,
  smaller), and join the image in a two-level U-Net.  The residual is ``bound * tanh(.)``:
  its L-inf norm never exceeds ``bound`` (pixel range 0..1).
- The decoder is a small strided CNN that reads the bits back from the stored image.
- Training rounds the encoded image to 8 bits with a straight-through gradient, so the
  decoder learns from exactly what a ``uint8`` poisoned set holds, then distorts it before
  decoding, as StegaStamp does: a random zoom and shift (the crops of training
  augmentation), brightness and contrast changes, Gaussian noise; the strength ramps up
  over the first third of the steps.  Without distortions the code hides in fine texture
  that a victim's augmentation destroys: at PSNR 33-42 dB the undefended model learnt no
  backdoor (ASR 0.05 on the default data, docs/attacks.md).  The residual's weight
  ramps up linearly (StegaStamp's ramp: the bits are found
  first, then the residual shrinks): none in the first third of the steps, full weight
  from two thirds on.  Penalised from the start, the residual collapses to zero before
  the decoder finds any bit (measured: bit accuracy 0.50 after 600 steps).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from safetensors.torch import save as save_safetensors_bytes
from torch import nn
from tqdm.auto import tqdm

from ieu_potion.config import (
    Count,
    Fraction,
    Natural,
    NonNegative,
    settings,
    settings_from_params,
)
from ieu_potion.data.errors import ArtifactError
from ieu_potion.io import RemotePath, atomic_write_bytes, atomic_write_text, location
from ieu_potion.models.factory import (
    check_saved_pair,
    load_weights,
    read_json_object,
    read_safetensors,
)

log = logging.getLogger(__name__)

_SECRET_GRID = 8


@settings
class CodecConfig:
    """``data_poisoning.stega_codec``: the codec's size, training and residual bound."""

    bits: Count = 32  # length of the hidden string
    width: Count = 32  # channels of the first U-Net level (the second has twice as many)
    # L-inf bound of the residual, pixel range 0..1 (0.1: about 26/255)
    bound: Annotated[float, Strict(), Field(gt=0, le=0.5)] = 0.1
    steps: Count = 1200  # codec training steps
    batch_size: Count = 64  # images per codec step
    # 1e-3 saturated the residual and found no bit on GTSRB
    lr: Annotated[float, Strict(), Field(gt=0, le=1)] = 3.0e-4
    residual_weight: NonNegative = 0.05  # weight of mean(residual^2) / bound^2 after the ramp
    distortion: NonNegative = 1.0  # strength of the distortions between encoder and decoder
    holdout: Fraction = 0.1  # share of the pretraining split kept for the bit accuracy
    seed: Natural = 0  # codec initialisation, batches and the secret

    @classmethod
    def from_params(cls, params: dict | None) -> CodecConfig:
        return settings_from_params(cls, params, "data_poisoning.stega_codec")


def _block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1), nn.ReLU()
    )


class StegaCodec(nn.Module):
    """Encoder and decoder of one bit length, for images of one size (H, W)."""

    def __init__(self, config: CodecConfig, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.config = config
        self.image_size = tuple(int(s) for s in image_size)
        self.metrics: dict = {}  # held-out measurements, saved beside the weights
        w = config.width
        self.secret = nn.Linear(config.bits, 3 * _SECRET_GRID * _SECRET_GRID)
        self.down = nn.Sequential(_block(6, w), _block(w, w))
        self.middle = nn.Sequential(_block(w, 2 * w, stride=2), _block(2 * w, 2 * w))
        self.up = nn.Sequential(_block(3 * w, w), nn.Conv2d(w, 3, 1))
        self.reader = nn.Sequential(
            _block(3, w, stride=2), _block(w, 2 * w, stride=2), _block(2 * w, 2 * w)
        )
        self.readout = nn.Linear(2 * w * 16, config.bits)

    def residual(self, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in 0..1 and bits (B, n) in {0, 1} -> bounded residual."""
        secret = self.secret(bits.float() * 2 - 1).view(-1, 3, _SECRET_GRID, _SECRET_GRID)
        secret = F.interpolate(secret, size=images.shape[-2:], mode="bilinear")
        skip = self.down(torch.cat([images * 2 - 1, secret], dim=1))
        deep = F.interpolate(self.middle(skip), size=skip.shape[-2:], mode="nearest")
        return self.config.bound * torch.tanh(self.up(torch.cat([skip, deep], dim=1)))

    def encode(self, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """The encoded images, rounded to 8 bits (straight-through gradient)."""
        return _stored(images + self.residual(images, bits))

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """Bit logits (B, n) read from images (B, 3, H, W) in 0..1."""
        features = F.adaptive_avg_pool2d(self.reader(images * 2 - 1), 4)
        return self.readout(features.flatten(1))

    def check_size(self, image_size: tuple[int, int]) -> None:
        if tuple(image_size) != self.image_size:
            raise ValueError(
                f"the ISSBA codec was trained on {self.image_size[0]}x{self.image_size[1]} "
                f"images; these are {image_size[0]}x{image_size[1]}: retrain it "
                "(remove the stega_codec artifact) for this data set"
            )


def _stored(images: torch.Tensor) -> torch.Tensor:
    """Clipped to 0..1 and rounded to 8 bits; the gradient passes the rounding unchanged."""
    images = images.clamp(0, 1)
    return images + ((images * 255).round() / 255 - images).detach()


def distort(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """StegaStamp-style training distortions at ``strength`` (0: none, 1: full): zoom
    up to 15% and shift up to 10% (bilinear, borders repeated), brightness +-0.1 and
    contrast x(0.8..1.2), Gaussian noise of sd 0.02."""
    if strength == 0:
        return images
    b = images.shape[0]

    def uniform(spread):
        return (torch.rand(b, generator=generator) * 2 - 1) * spread * strength

    theta = torch.zeros(b, 2, 3)
    zoom = 1 - 0.15 * strength * torch.rand(b, generator=generator)
    theta[:, 0, 0] = theta[:, 1, 1] = zoom
    theta[:, 0, 2], theta[:, 1, 2] = uniform(0.2), uniform(0.2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * (1 + uniform(0.2)).view(b, 1, 1, 1) + mean + uniform(0.1).view(b, 1, 1, 1)
    noise = torch.randn(out.shape, generator=generator) * 0.02 * strength
    return (out + noise).clamp(0, 1)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def encode_images(codec: StegaCodec, images: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Hide ``bits`` in the uint8 images (N, H, W, 3): one string (n,) for every image, or
    one row of (N, n) per image; uint8 out, in chunks."""
    codec.check_size(images.shape[1:3])
    codec.eval()
    out = np.empty_like(images)
    secret = torch.from_numpy(np.asarray(bits, dtype=np.float32))
    secret = secret.expand(len(images), -1) if secret.ndim == 1 else secret
    with torch.no_grad():
        for start in range(0, len(images), 256):
            chunk = _to_tensor(images[start : start + 256])
            encoded = codec.encode(chunk, secret[start : start + 256])
            out[start : start + 256] = (
                (encoded * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
            )
    return out


def decode_images(codec: StegaCodec, images: np.ndarray) -> np.ndarray:
    """The bits (N, n) the decoder reads from uint8 images (N, H, W, 3)."""
    codec.check_size(images.shape[1:3])
    codec.eval()
    with torch.no_grad():
        chunks = [
            (codec.decode(_to_tensor(images[start : start + 256])) > 0).numpy()
            for start in range(0, len(images), 256)
        ]
    return np.concatenate(chunks).astype(np.uint8)


def psnr(clean: np.ndarray, encoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 image stacks (inf when identical)."""
    mse = np.mean((clean.astype(np.float64) - encoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def residual_size(clean: np.ndarray, encoded: np.ndarray) -> dict[str, float | int]:
    """How visible the residual between two uint8 image stacks is: PSNR (dB) and the
    largest change of one channel value (of 255)."""
    change = np.abs(encoded.astype(np.int16) - clean.astype(np.int16))
    return {"psnr_db": psnr(clean, encoded), "linf": int(change.max())}


def train_codec(images: np.ndarray, config: CodecConfig) -> StegaCodec:
    """Train on uint8 images (N, H, W, 3) with random bit strings; the codec's ``metrics``
    are measured on held-out images (bit accuracy, PSNR, largest change, after 8-bit
    rounding)."""
    if len(images) < 2:
        raise ValueError("the ISSBA codec needs at least two clean images to train on")
    rng = np.random.default_rng([config.seed, 11])
    order = rng.permutation(len(images))
    held = max(1, int(round(config.holdout * len(images))))
    heldout, train = images[order[:held]], images[order[held:]]
    torch.manual_seed(config.seed)
    # channels-last weights: 0.87x the time of a codec step on the CPU (docs/benchmarks.md)
    codec = StegaCodec(config, images.shape[1:3]).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(codec.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    quiet, ramp = config.steps // 3, max(1, config.steps // 3)
    progress = tqdm(range(config.steps), desc="ISSBA codec", unit="step", leave=False, disable=None)
    for step in progress:
        pick = torch.randint(
            0, len(train), (min(config.batch_size, len(train)),), generator=generator
        )
        batch = _to_tensor(train[pick.numpy()])
        bits = torch.randint(0, 2, (len(batch), config.bits), generator=generator).float()
        residual = codec.residual(batch, bits)
        strength = config.distortion * min(1.0, step / ramp)
        seen = distort(_stored(batch + residual), strength, generator)
        bit_loss = F.binary_cross_entropy_with_logits(codec.decode(seen), bits)
        size_loss = residual.pow(2).mean() / config.bound**2
        weight = config.residual_weight * min(1.0, max(0, step - quiet) / ramp)
        loss = bit_loss + weight * size_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == config.steps - 1:
            progress.set_postfix(bits=f"{bit_loss.item():.3f}", residual=f"{size_loss.item():.3f}")
            log.info(
                "ISSBA codec step %d/%d: bit loss %.4f, residual mean square %.4f of bound^2",
                step + 1,
                config.steps,
                bit_loss.item(),
                size_loss.item(),
            )
    metrics = codec_metrics(codec, heldout, rng.integers(0, 2, (held, config.bits)))
    log.info(
        "ISSBA codec on %d held-out images: bit accuracy %.4f, PSNR %.1f dB, L-inf %d/255",
        held,
        metrics["bit_accuracy"],
        metrics["psnr_db"],
        metrics["linf"],
    )
    if metrics["bit_accuracy"] < 0.9:
        log.warning(
            "the ISSBA decoder reads only %.1f%% of the bits back: raise "
            "data_poisoning.stega_codec.steps or bound (the poison is still the residual)",
            100 * metrics["bit_accuracy"],
        )
    codec.metrics = {"heldout_images": held, **metrics}
    return codec


def codec_metrics(codec: StegaCodec, images: np.ndarray, bits: np.ndarray) -> dict:
    """Encode each image with its row of ``bits`` and read them back, after 8-bit
    rounding: bit accuracy, PSNR (dB) and the largest change (of 255)."""
    stored = encode_images(codec, images, bits)
    read = decode_images(codec, stored)
    return {"bit_accuracy": float((read == bits).mean()), **residual_size(images, stored)}


CODEC_WEIGHTS = "codec.safetensors"
CODEC_SPEC = "codec.json"


def save_codec(codec: StegaCodec, folder: str | Path | RemotePath) -> None:
    """Weights, then ``codec.json`` (settings, image size, metrics) as the commit mark."""
    folder = location(folder)
    (folder / CODEC_SPEC).unlink(missing_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}
    atomic_write_bytes(folder / CODEC_WEIGHTS, save_safetensors_bytes(tensors))
    spec = {"config": asdict(codec.config), "image_size": list(codec.image_size)}
    atomic_write_text(folder / CODEC_SPEC, json.dumps({**spec, "metrics": codec.metrics}, indent=2))


def load_codec(folder: str | Path | RemotePath) -> StegaCodec:
    """The codec saved in ``folder`` by ``save_codec``.  ``ArtifactError`` names the file
    when a half is missing (``codec.json`` missing: an interrupted save), truncated,
    corrupted, or when the weights do not fit the settings in ``codec.json``."""
    folder = location(folder)
    weights, spec_file = folder / CODEC_WEIGHTS, folder / CODEC_SPEC
    check_saved_pair(folder, weights, spec_file, "ISSBA codec")
    spec = read_json_object(spec_file, "codec settings")
    try:
        config = CodecConfig(**spec["config"])
        image_size = tuple(int(side) for side in spec["image_size"])
        if len(image_size) != 2:
            raise ValueError(f"image_size has {len(image_size)} sides")
        codec = StegaCodec(config, image_size)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(
            f"codec settings {str(spec_file)!r} are not valid ({type(exc).__name__}: {exc}); "
            "expected "
            "an object with config (CodecConfig fields), image_size ([height, width]) and "
            "metrics, as save_codec writes it"
        ) from exc
    load_weights(codec, read_safetensors(weights, "codec weights"), weights, spec_file)
    codec.metrics = spec.get("metrics", {})
    return codec
