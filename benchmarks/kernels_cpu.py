"""The flat-buffer kernel interface on the CPU against a naive per-parameter loop.

SSD-style code usually keeps one importance tensor per parameter and loops over the model
(``imp[name] += grad**2``; ``p[mask] *= factor[mask]``).  The kernels here work on one flat
buffer for the whole model.  Both are timed side by side, on the parameter layout of
ViT-S/16 and ViT-B/16 (built by timm, random weights), with the reference (pure-torch)
path that runs on the CPU:

    .venv/bin/python benchmarks/kernels_cpu.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import timm
import torch

from ieu_potion import kernels

MODELS = {"ViT-S/16": "vit_small_patch16_224", "ViT-B/16": "vit_base_patch16_224"}
PTN_PARALLEL = 8


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_accumulate(grads, importance, scale):
    for g, imp in zip(grads, importance, strict=True):
        imp.add_(g.float().pow(2), alpha=scale)


def naive_dampen(params, i_f, i_r, alpha, lam):
    out = []
    for p, f, r in zip(params, i_f, i_r, strict=True):
        p = p.clone()
        mask = f > alpha * r
        factor = (lam * r / f).clamp(max=1.0)
        p[mask] = p[mask] * factor[mask]
        out.append(p)
    return out


def measure(label: str, name: str, repeats: int) -> list[str]:
    """Table rows for one model's parameter layout."""
    model = timm.create_model(name, pretrained=False)
    params = [p.detach() for p in model.parameters()]
    grads = [torch.randn_like(p) for p in params]
    i_f = [torch.rand_like(p) for p in params]
    i_r = [torch.rand_like(p) for p in params]
    importance = [torch.zeros_like(p) for p in params]
    flat_params, flat_grads, flat_f, flat_r = (
        torch.cat([t.reshape(-1) for t in tensors]) for tensors in (params, grads, i_f, i_r)
    )
    total = torch.zeros_like(flat_params)
    gathered = torch.empty_like(flat_params)
    alphas = torch.linspace(1.0, 20.0, PTN_PARALLEL)

    def gather_and_accumulate():
        torch.cat([g.reshape(-1) for g in grads], out=gathered)
        kernels.accumulate_importance(gathered, total, "square", 0.01)

    cases = [
        (
            "accumulate_importance (square)",
            lambda: naive_accumulate(grads, importance, 0.01),
            lambda: kernels.accumulate_importance(flat_grads, total, "square", 0.01),
        ),
        (
            "accumulate_importance incl. gathering the grads",
            lambda: naive_accumulate(grads, importance, 0.01),
            gather_and_accumulate,
        ),
        (
            "dampen, 1 alpha",
            lambda: naive_dampen(params, i_f, i_r, 5.0, 1.0),
            lambda: kernels.dampen(flat_params, flat_f, flat_r, 5.0, 1.0),
        ),
        (
            f"dampen, {PTN_PARALLEL} alphas",
            lambda: [naive_dampen(params, i_f, i_r, float(a), 1.0) for a in alphas],
            lambda: kernels.dampen(flat_params, flat_f, flat_r, alphas, 1.0),
        ),
    ]
    rows = []
    for operation, loop, flat in cases:
        t_loop = median_seconds(loop, repeats)
        t_flat = median_seconds(flat, repeats)
        cells = (label, f"{flat_params.numel() / 1e6:.1f}M", len(params), operation)
        cells += (f"{t_loop * 1e3:.1f}", f"{t_flat * 1e3:.1f}", f"{t_loop / t_flat:.2f}")
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ[kernels.BACKEND_VARIABLE] = "reference"
    torch.manual_seed(0)
    print(
        f"machine: {platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}, date {time.strftime('%Y-%m-%d')}"
    )
    print("| model | params | tensors | operation | per-parameter loop ms | flat ms | loop/flat |")
    print("|---|---|---|---|---|---|---|")
    for label, name in MODELS.items():
        print("\n".join(measure(label, name, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
