"""The corrupted view: coverage counted with torch (as first written) against NumPy
counting and painting (the engine's), side by side, with the same torch draws.

Times ``--repeats`` alternating rounds of ``--batches`` batches (128 images at 32 px,
the default's finetuning batch) and checks the outputs are equal.

    .venv/bin/python benchmarks/corrupt_view.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.training.test_engine import corrupt_with_torch_counting  # noqa: E402

from ieu_potion.training.views import ViewMaker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    views = ViewMaker(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.rand(128, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    variants = {
        "torch counting (before)": lambda g: corrupt_with_torch_counting(views, x, g),
        "numpy counting (engine)": lambda g: views.corrupt(x, g),
    }
    times = {name: [] for name in variants}
    outputs = {}
    for _ in range(args.repeats):
        for name, corrupt in variants.items():
            g = torch.Generator().manual_seed(1)
            start = time.perf_counter()
            outputs[name] = [corrupt(g) for _ in range(args.batches)]
            times[name].append((time.perf_counter() - start) / args.batches)
    same = all(torch.equal(a, b) for a, b in zip(*outputs.values(), strict=True))
    base = statistics.median(times["torch counting (before)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<26} {1e3 * median:7.1f} ms/batch  ratio {median / base:.2f}")
    print(f"same output: {same}")


if __name__ == "__main__":
    main()
