"""AdamW's step on the CPU: the per-tensor loop, the multi-tensor (foreach) update the
engine uses, and the fused kernel, side by side on resnet10t's parameters.

Each variant takes ``--steps`` steps from the same start on the same gradients, alternating
over ``--repeats`` rounds; prints the median seconds per step, the ratio to the loop and
whether the weights match the loop's bytes.

    .venv/bin/python benchmarks/adamw_step.py --steps 50 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch

VARIANTS = {
    "per-tensor loop": {"foreach": False},
    "foreach (engine)": {"foreach": True},
    "fused": {"fused": True},
}


def steps(model: torch.nn.Module, x, y, n: int, **kind) -> tuple[float, torch.nn.Module]:
    model = copy.deepcopy(model)
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, **kind)
    seconds = 0.0
    for _ in range(n):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        start = time.perf_counter()
        optimizer.step()
        seconds += time.perf_counter() - start
    return seconds / n, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    final: dict[str, torch.nn.Module] = {}
    for _ in range(args.repeats):
        for name, kind in VARIANTS.items():
            seconds, final[name] = steps(model, x, y, args.steps, **kind)
            times[name].append(seconds)
    loop = statistics.median(times["per-tensor loop"])
    for name, seconds in times.items():
        same = all(
            torch.equal(a, b)
            for a, b in zip(
                final[name].parameters(), final["per-tensor loop"].parameters(), strict=True
            )
        )
        median = statistics.median(seconds)
        print(
            f"{name:18s} {1e3 * median:6.2f} ms/step  ratio {median / loop:.2f}  "
            f"same bytes as the loop: {same}"
        )


if __name__ == "__main__":
    main()
