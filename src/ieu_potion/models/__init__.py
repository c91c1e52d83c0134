"""Model factory (timm names), shallow-ViT truncation, weight sources, safe checkpoints."""

from ieu_potion.models.factory import (
    ModelSpec,
    build_model,
    input_size,
    is_vit,
    load_model,
    normalisation,
    save_model,
    shallow_vit,
)

__all__ = [
    "ModelSpec",
    "build_model",
    "input_size",
    "is_vit",
    "load_model",
    "normalisation",
    "save_model",
    "shallow_vit",
]
