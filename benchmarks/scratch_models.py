"""The Potion benchmark's from-scratch models side by side on the CPU: timm's resnet10t
(the environment's model until 2026-12-07), the paper's ResNet-9 at half its widths (the
CPU environments' model) and at its own widths (potion_paper_cifar10's).

Each model is built as the engine builds it (``models.build_model``: small-map
convolutions, channels-last weights) at 32 px with 43 classes (GTSRB's count), and takes
``--steps`` SGD steps (Nesterov momentum, as the environment's recipe) on one batch of
``--batch`` images, alternating over ``--repeats`` rounds after a warm-up; prints the median
milliseconds per step, the ratio to resnet10t, the parameter count and the convolution and
matrix-product work per step (torch's FLOP counter).

    .venv/bin/python benchmarks/scratch_models.py --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ieu_potion.models import ModelSpec, build_model

MODELS = {
    "resnet10t": ModelSpec("resnet10t", 43, {}, 32),
    "resnet9, half widths": ModelSpec("resnet9", 43, {"widths": [32, 64, 128, 64]}, 32),
    "resnet9, the paper's widths": ModelSpec("resnet9", 43, {"widths": [64, 128, 256, 128]}, 32),
}


def steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> float:
    """Seconds per SGD step, over ``n`` steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    start = time.perf_counter()
    for _ in range(n):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 43, (args.batch,))
    models = {name: build_model(spec) for name, spec in MODELS.items()}
    for model in models.values():
        steps(model, x, y, 2)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(steps(model, x, y, args.steps))
    base = statistics.median(times["resnet10t"])
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} steps")
    for name, model in models.items():
        ms = statistics.median(times[name])
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.cross_entropy(model(x), y).backward()
        parameters = sum(p.numel() for p in model.parameters())
        print(
            f"{name:<28} {1000 * ms:8.1f} ms/step  ratio {ms / base:5.2f}  "
            f"{parameters / 1e6:5.2f} M parameters  {counter.get_total_flops() / 1e9:6.2f} GFLOP"
        )


if __name__ == "__main__":
    main()
