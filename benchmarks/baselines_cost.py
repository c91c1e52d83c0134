"""Time and peak memory of the IEU-side defences on one model, side by side in one run.

Each registered defence of the baselines pipeline runs through ``registry.run_defence``
(the same measurement the results rows carry: wall time, and peak memory above the
start: CUDA's allocator peak on a GPU, the sampled resident set on the CPU) on random
images: one epoch of the undefended finetune, one epoch of each ABL phase, one I-BAU
round, AttnBlock on the test images.  At the IEU paper's scale (ViT-S/16 at 224 px,
batch 64, 10 classes), on a GPU:

    python benchmarks/baselines_cost.py

``--smoke`` runs a 2-block ViT at 32 px on a few images (any machine), to check the
script; ``--images`` sets the training-set size.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.registry import DEFENCES, Task, run_defence
from ieu_potion.models import ModelSpec, build_model
from ieu_potion.training.engine import FinetuneConfig


def random_set(n: int, rng: np.random.Generator, poisoned: int = 0) -> ImageSet:
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    data = ImageSet.clean(images, rng.integers(0, 10, n), [str(c) for c in range(10)])
    flags = np.zeros(n, dtype=bool)
    flags[:poisoned] = True
    return ImageSet(
        data.images, data.labels, data.true_labels, flags, data.attack, data.class_names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--images", type=int, default=640)
    args = parser.parse_args()
    if args.smoke:
        spec = ModelSpec("vit_tiny_patch16_224", 10, {"patch_size": 4, "depth": 2}, 32)
        images = 96
    else:
        spec = ModelSpec("vit_small_patch16_224", 10, {}, 224)
        images = args.images
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(spec).to(device)
    recipe = FinetuneConfig(epochs=1, batch_size=64, lr=1e-4, device=device)
    task = Task(
        model,
        random_set(images, rng, poisoned=images // 10),
        random_set(images // 2, rng),
        random_set(images // 2, rng),
        recipe,
        0,
        undefended=model,
        trusted=random_set(images // 2, rng),
    )
    settings = {
        "none": {},
        "abl": {"isolation_epochs": 1, "unlearning_epochs": 1},
        "ibau": {"rounds": 1},
        "attnblock": {},
    }
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    print(
        f"{spec.name} at {spec.image_size} px on {name} ({device}), torch {torch.__version__}, "
        f"{images} training images, batch 64"
    )
    print("| method | what ran | seconds | peak memory (MiB) | memory / none |")
    print("| --- | --- | --- | --- | --- |")
    first = None
    for method, params in settings.items():
        defence = DEFENCES[method]
        outcome = run_defence(defence, task, defence.configure(params))
        memory = outcome.metrics["peak_memory_mb"]
        first = first or memory
        what = {
            "none": "1 finetune epoch",
            "abl": "1 isolation + 1 finetune + 1 unlearning epoch",
            "ibau": f"1 round on {len(task.trusted)} clean images, K = 5",
            "attnblock": f"rollout + blanking on {2 * len(task.clean_test)} test images",
        }[method]
        print(
            f"| {method} | {what} | {outcome.metrics['seconds']:.1f} | {memory:.0f} | "
            f"{memory / first:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
