"""Models by timm name, the shallow poisoned module, weight sources and safe checkpoints.

A model is described by a ``ModelSpec`` (timm name, class count, keyword arguments such
as image size, patch size, depth, drop-path rate).  The spec travels beside the weights
(``<dir>/spec.json`` + ``<dir>/model.safetensors``), so a saved model rebuilds itself.

Saved models and checkpoints that cannot be read (a missing half, a truncated or
corrupted file, weights that do not fit the spec) raise ``ArtifactError`` (a
``DataLayoutError``, hence a ``ValueError``) naming the file and what was expected there.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from ieu_potion.data.errors import ArtifactError
from ieu_potion.io import AnyPath, RemotePath, atomic_write_bytes, atomic_write_text, location
from ieu_potion.models import resnet9  # noqa: F401  (registers `resnet9` with timm)
from ieu_potion.models.small_maps import use_small_map_convolutions

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
        check_kwargs(self.kwargs)

    def with_kwargs(self, **kwargs: Any) -> ModelSpec:
        return ModelSpec(self.name, self.num_classes, {**self.kwargs, **kwargs}, self.image_size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


# Constructor arguments that make timm read a file or the network, or that the spec sets
# itself: refused in kwargs (a weight source is `model.weights`, never a kwarg).
FORBIDDEN_KWARGS = (
    "checkpoint_path",
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "pretrained_strict",
    "cache_dir",
    "num_classes",
)
# The only kwargs that may take a string (a layer or pooling by name); every other value is
# a number, a boolean, null, or a list of numbers.
STRING_KWARGS = ("global_pool", "stem_type", "act_layer", "norm_layer")


def check_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuse constructor arguments that could make timm touch a file or the network
    (a model's ``spec.json`` may come from elsewhere): the ``FORBIDDEN_KWARGS``, strings
    outside ``STRING_KWARGS``, and nested objects."""

    def plain(value: Any) -> bool:
        return value is None or isinstance(value, bool | int | float)

    for key, value in kwargs.items():
        if key in FORBIDDEN_KWARGS:
            raise ValueError(
                f"model kwargs may not set {key!r} (weights come from model.weights; the "
                f"spec sets the class count); refused: {', '.join(FORBIDDEN_KWARGS)}"
            )
        if isinstance(value, str):
            if key not in STRING_KWARGS:
                raise ValueError(
                    f"model kwarg {key!r} = {value!r}: only {', '.join(STRING_KWARGS)} take a "
                    "string; other kwargs are numbers, booleans or lists of numbers"
                )
        elif not (plain(value) or isinstance(value, list | tuple) and all(map(plain, value))):
            raise ValueError(
                f"model kwarg {key!r} = {value!r}: a number, a boolean, null, a list of "
                f"numbers, or for {', '.join(STRING_KWARGS)} a string"
            )


def _timm_kwargs(spec: ModelSpec) -> dict[str, Any]:
    kwargs = dict(spec.kwargs)
    if spec.image_size is not None and spec.name.startswith(("vit_", "deit_")):
        kwargs.setdefault("img_size", spec.image_size)
    return kwargs


@functools.lru_cache(maxsize=64)
def _meta_model(name: str, num_classes: int, kwargs: str) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, num_classes=num_classes, **json.loads(kwargs))


def meta_model(spec: ModelSpec) -> nn.Module:
    """``spec`` built on PyTorch's meta device: its constructor arguments and shapes are
    checked without allocating a single weight (a model of 8 GB costs nothing here), so a
    wrong ``kwargs`` entry is refused before any work.  Built once per process and spec."""
    spec.check()
    kwargs = _timm_kwargs(spec)
    try:
        return _meta_model(spec.name, spec.num_classes, json.dumps(kwargs, sort_keys=True))
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise ValueError(
            f"model {spec.name!r} cannot be built with kwargs {spec.kwargs}: {exc}"
        ) from None


def has_pretrained_weights(name: str) -> bool:
    """Whether timm lists pretrained weights for the model ``name`` (with or without a
    ``.tag``): what ``model.weights.source: timm`` asks it to download."""
    return bool(timm.list_pretrained(name) or timm.list_pretrained(f"{name}.*"))


def vit_depth(spec: ModelSpec) -> int | None:
    """The number of transformer blocks where ``spec`` is a ViT, else None."""
    model = meta_model(spec)
    return len(model.blocks) if is_vit(model) else None


def build_model(spec: ModelSpec, pretrained: bool = False) -> nn.Module:
    """Instantiate ``spec`` with timm; ``pretrained`` asks timm to download weights.  Its
    convolutions take the weight gradient on small CPU feature maps as a matrix product
    (``models.small_maps``), and its 4-D weights are stored channels-last (the same
    parameters and state dict; the arithmetic differs from timm's model by float rounding)."""
    spec.check()
    model = timm.create_model(
        spec.name, pretrained=pretrained, num_classes=spec.num_classes, **_timm_kwargs(spec)
    )
    # channels-last weights: oneDNN's native layout, 0.84x resnet10t's CPU training step
    use_small_map_convolutions(model).to(memory_format=torch.channels_last)
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


def shallow_vit(robust: nn.Module, depth: int, num_classes: int | None = None) -> nn.Module:
    """The poisoned module: the robust ViT truncated to ``depth`` blocks, fresh head.

    Patch embedding, tokens, position embedding, the first ``depth`` blocks and the final
    norm are copied from ``robust``; the classification head is newly initialised, for
    ``num_classes`` (default: the robust ViT's).
    """
    if not is_vit(robust):
        raise ValueError("shallow_vit needs a timm VisionTransformer to truncate")
    if not 1 <= depth <= len(robust.blocks):
        raise ValueError(f"depth must lie in [1, {len(robust.blocks)}], got {depth}")
    spec = robust.spec.with_kwargs(depth=depth)
    if num_classes is not None:
        spec = replace(spec, num_classes=num_classes)
    gate = build_model(spec)
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
    """Tensors from a ``.safetensors`` file or a ``.pth``/``.pt`` read with weights_only.

    A missing file raises ``FileNotFoundError``; a file that cannot be read as a state
    dict raises ``ArtifactError``; both name the path."""
    path = Path(path)
    expected = "give a .safetensors file or a .pth/.pt state dict (timm format)"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; {expected}")
    if not path.is_file():
        raise ArtifactError(f"checkpoint {str(path)!r} is not a file; {expected}")
    if path.suffix == ".safetensors":
        return read_safetensors(path, "checkpoint")
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise ValueError(f"checkpoint {str(path)!r}: expected .safetensors, .pth, .pt or .bin")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, refused global, unreadable file
        raise ArtifactError(
            f"checkpoint {str(path)!r} cannot be read as a PyTorch state dict (truncated, "
            "corrupted "
            "or holding more than tensors); it is not loaded with weights_only=False, which "
            f"would run code from the file. {expected}. PyTorch says: {exc}"
        ) from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def read_safetensors(path: AnyPath, what: str) -> dict[str, torch.Tensor]:
    """The tensors of the ``.safetensors`` file ``path`` (the ``what`` of an error message);
    a truncated, corrupted or unreadable file raises ``ArtifactError`` naming it."""
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{what} {str(path)!r} cannot be read: {exc}") from exc
    return read_safetensors_bytes(payload, path, what)


def read_safetensors_bytes(payload: bytes, path: AnyPath, what: str) -> dict[str, torch.Tensor]:
    """``read_safetensors`` of a payload already read from ``path``."""
    try:
        return load(payload)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ArtifactError(
            f"{what} {str(path)!r} is not a readable safetensors file (truncated or "
            f"corrupted?): {exc}"
        ) from exc


def read_json_object(path: AnyPath, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (the ``what`` of an error message); a file that is not
    UTF-8 JSON holding an object raises ``ArtifactError`` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeError
        raise ArtifactError(
            f"{what} {str(path)!r} is not readable JSON (truncated or edited?): {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ArtifactError(
            f"{what} {str(path)!r} must hold a JSON object, got {type(data).__name__}"
        )
    return data


def check_saved_pair(folder: AnyPath, weights: AnyPath, commit: AnyPath, what: str) -> None:
    """Refuse a saved folder that lacks one of its two files.

    ``commit`` is the file written last (the commit mark): weights without it are an
    interrupted save; the commit mark without weights is a folder changed after saving."""
    if not folder.is_dir():
        raise ArtifactError(
            f"no {what} at {str(folder)!r}: expected a folder holding {weights.name} and "
            f"{commit.name}"
        )
    has_weights, has_commit = weights.is_file(), commit.is_file()
    if has_weights and not has_commit:
        raise ArtifactError(
            f"{str(commit)!r} missing: an interrupted save ({weights.name} is there but "
            f"{commit.name}, written last, is not); rerun the node that writes {str(folder)!r}"
        )
    if has_commit and not has_weights:
        raise ArtifactError(
            f"{str(weights)!r} missing although {commit.name} is there: the folder changed after "
            f"the save; rerun the node that writes {str(folder)!r}"
        )
    if not has_weights:
        raise ArtifactError(
            f"no {what} in {str(folder)!r}: expected {weights.name} and {commit.name}; rerun "
            "the node "
            "that writes it"
        )


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path, commit: Path):
    """Load ``tensors`` (read from ``path``) into ``module`` (built from ``commit``); a
    mismatch raises ``ArtifactError`` naming both files."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as exc:
        detail = str(exc)
        detail = detail if len(detail) <= 600 else detail[:600] + " ..."
        raise ArtifactError(
            f"{str(path)!r} does not fit the network described by {str(commit)!r}: the two "
            "files come from "
            f"different saves; rerun the node that writes {path.parent}. {detail}"
        ) from exc


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


def save_model(model: nn.Module, folder: str | Path | RemotePath) -> None:
    """Weights, then the spec: the spec is removed first and written last, so a folder
    with a spec always holds the weights saved with it."""
    folder = location(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    (folder / SPEC_FILE).unlink(missing_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors))
    atomic_write_text(folder / SPEC_FILE, model.spec.to_json())


def load_model(folder: str | Path | RemotePath) -> nn.Module:
    """The model saved in ``folder`` by ``save_model``; ``ArtifactError`` names the file
    when a half is missing (``spec.json`` missing: an interrupted save), truncated,
    corrupted, or when the weights do not fit the spec."""
    folder = location(folder)
    weights, spec_file = folder / WEIGHTS_FILE, folder / SPEC_FILE
    check_saved_pair(folder, weights, spec_file, "model")
    spec = _spec_from_json(read_json_object(spec_file, "model spec"), spec_file)
    try:
        expected = meta_model(spec).state_dict()  # shapes, without allocating a weight
    except ValueError as exc:  # kwargs timm does not take
        raise ArtifactError(f"model spec {str(spec_file)!r} does not build a model: {exc}") from exc
    payload = weights.read_bytes()
    found = safetensors_shapes(payload, weights)
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    wrong = sorted(k for k in set(shapes) | set(found) if shapes.get(k) != found.get(k))
    if wrong:
        raise ArtifactError(
            f"{str(weights)!r} does not fit the network described by {str(spec_file)!r} "
            f"(tensors {wrong[:5]}{' ...' if len(wrong) > 5 else ''} differ in name or "
            "shape): the two files come from different saves; rerun the node that writes "
            f"{str(folder)!r}"
        )
    model = build_model(spec)
    load_weights(
        model, read_safetensors_bytes(payload, weights, "model weights"), weights, spec_file
    )
    return model


def safetensors_shapes(payload: bytes, path: AnyPath) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a ``.safetensors`` payload's header declares, read before any
    tensor: 8 bytes of header length, then that many bytes of JSON."""
    bad = (
        f"model weights {str(path)!r} are not a readable safetensors file (truncated or corrupted?)"
    )
    if len(payload) < 8:
        raise ArtifactError(f"{bad}: {len(payload)} bytes")
    size = int.from_bytes(payload[:8], "little")
    if size > len(payload) - 8:
        raise ArtifactError(f"{bad}: a header of {size} bytes in a file of {len(payload)}")
    try:
        header = json.loads(payload[8 : 8 + size])
        return {
            k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ArtifactError(f"{bad}: its header is not valid ({exc})") from exc


def _spec_from_json(data: dict[str, Any], path: Path) -> ModelSpec:
    expected = (
        "expected an object with name (a timm model name), num_classes (an integer >= 2), "
        "kwargs (an object) and image_size (an integer or null)"
    )
    types = {"name": str, "num_classes": int, "kwargs": dict, "image_size": (int, type(None))}
    wrong = sorted(set(data) ^ set(types))
    wrong += [k for k, t in types.items() if k in data and not isinstance(data[k], t)]
    if wrong or isinstance(data.get("num_classes"), bool):
        raise ArtifactError(f"model spec {str(path)!r} is not valid (fields {wrong}); {expected}")
    spec = ModelSpec(**data)
    try:
        spec.check()
    except ValueError as exc:
        raise ArtifactError(f"model spec {str(path)!r} is not valid: {exc}") from exc
    return spec
