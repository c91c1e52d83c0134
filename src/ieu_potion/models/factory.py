"""Models by timm name, the shallow poisoned module, weight sources and safe checkpoints.

A model is described by a ``ModelSpec`` (timm name, class count, keyword arguments such
as image size, patch size, depth, drop-path rate).  The spec travels beside the weights
(``<dir>/spec.json`` + ``<dir>/model.safetensors``), so a saved model rebuilds itself.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file, save
from torch import nn

from ieu_potion.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

WEIGHT_SOURCES = ("pretrain", "checkpoint", "timm", "scratch")


@dataclass(frozen=True)
class ModelSpec:
    """A timm model: name, class count, constructor keyword arguments, input size.

    ``image_size`` is the side the images are resized to before the model sees them; None
    takes the size in timm's configuration of the model (224 for most).  ViTs get it as
    their ``img_size`` too.
    """

    name: str
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None

    def check(self) -> None:
        if self.name not in timm.list_models():
            close = difflib.get_close_matches(self.name, timm.list_models(), n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(
                f"unknown model {self.name!r}: not a timm model name (timm.list_models() "
                f"lists the valid ones){hint}"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.image_size is not None and not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size must lie in [8, 1024], got {self.image_size}")

    def with_kwargs(self, **kwargs: Any) -> ModelSpec:
        return ModelSpec(self.name, self.num_classes, {**self.kwargs, **kwargs}, self.image_size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_params(cls, params: dict[str, Any], num_classes: int) -> ModelSpec:
        unknown = sorted(set(params) - {"name", "kwargs", "image_size"})
        if unknown:
            raise ValueError(f"unknown model settings {unknown}; valid: name, kwargs, image_size")
        spec = cls(
            params["name"], num_classes, dict(params.get("kwargs") or {}), params.get("image_size")
        )
        spec.check()
        return spec


def build_model(spec: ModelSpec, pretrained: bool = False) -> nn.Module:
    """Instantiate ``spec`` with timm; ``pretrained`` asks timm to download weights."""
    spec.check()
    kwargs = dict(spec.kwargs)
    if spec.image_size is not None and spec.name.startswith(("vit_", "deit_")):
        kwargs.setdefault("img_size", spec.image_size)
    model = timm.create_model(
        spec.name, pretrained=pretrained, num_classes=spec.num_classes, **kwargs
    )
    model.spec = spec
    return model


def is_vit(model: nn.Module) -> bool:
    return isinstance(model, timm.models.vision_transformer.VisionTransformer)


def input_size(model: nn.Module) -> tuple[int, int]:
    """(H, W) the images are resized to: the spec's image size, else timm's config."""
    if model.spec.image_size is not None:
        return model.spec.image_size, model.spec.image_size
    img_size = model.spec.kwargs.get("img_size")
    if img_size is not None:
        return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return tuple(model.pretrained_cfg.get("input_size", (3, 224, 224))[1:])


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = model.pretrained_cfg
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def shallow_vit(robust: nn.Module, depth: int) -> nn.Module:
    """The poisoned module: the robust ViT truncated to ``depth`` blocks, fresh head.

    Patch embedding, tokens, position embedding, the first ``depth`` blocks and the final
    norm are copied from ``robust``; the classification head is newly initialised.
    """
    if not is_vit(robust):
        raise ValueError("shallow_vit needs a timm VisionTransformer to truncate")
    if not 1 <= depth <= len(robust.blocks):
        raise ValueError(f"depth must lie in [1, {len(robust.blocks)}], got {depth}")
    gate = build_model(robust.spec.with_kwargs(depth=depth))
    state = {
        k: v
        for k, v in robust.state_dict().items()
        if not k.startswith("head.") and _block_index(k) < depth
    }
    missing, unexpected = gate.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise RuntimeError(f"truncation mismatch: missing {missing}, unexpected {unexpected}")
    return gate


def _block_index(key: str) -> int:
    parts = key.split(".")
    return int(parts[1]) if parts[0] == "blocks" else -1


# ----------------------------------------------------------------------- checkpoints


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``.pth``/``.pt`` read with weights_only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; give a .safetensors file or a .pth/.pt "
            "state dict (timm format)"
        )
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise ValueError(f"checkpoint {path}: expected .safetensors, .pth, .pt or .bin")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load matching tensors into ``model``; the classification head stays fresh.

    Tensors whose name or shape does not match are skipped and logged; a checkpoint that
    matches nothing is an error.
    """
    own = model.state_dict()
    head = model.pretrained_cfg.get("classifier", "head") + "."
    usable = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and not k.startswith(head)
    }
    if not usable:
        raise ValueError(f"{source}: no tensor matches the model {model.spec.name}")
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(state) - set(usable))
    log.info(
        "loaded %d of %d tensors from %s (%d skipped: head or mismatched)",
        len(usable),
        len(own),
        source,
        len(skipped),
    )


WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"


def save_model(model: nn.Module, folder: str | Path) -> None:
    """Weights, then the spec: the spec is removed first and written last, so a folder
    with a spec always holds the weights saved with it."""
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    (folder / SPEC_FILE).unlink(missing_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors))
    atomic_write_text(folder / SPEC_FILE, model.spec.to_json())


def load_model(folder: str | Path) -> nn.Module:
    folder = Path(folder)
    spec = ModelSpec(**json.loads((folder / SPEC_FILE).read_text(encoding="utf-8")))
    model = build_model(spec)
    model.load_state_dict(load_safetensors_bytes((folder / WEIGHTS_FILE).read_bytes()))
    return model
