"""The Triton kernels on a GPU against the hardware limit and against torch, in one run.

- accumulate_importance and dampen (K = 1 and K = 8 alphas): GB/s moved, as a fraction of
  the device-to-device copy bandwidth measured in the same run, on the parameter counts of
  ViT-S/16 (about 22M) and ViT-B/16 (about 86M); the torch reference path alongside.
- masked_cross_entropy, forward + backward, 2 views per sample: Triton against the eager
  torch reference and ``torch.compile`` of it, at (B, C) = (256, 10), (4096, 200),
  (4096, 1000), fp32 and bf16 logits.

Times are medians of ``triton.testing.do_bench``.  Needs a CUDA device:

    python benchmarks/kernels_gpu.py

``--smoke`` instead runs every measurement once at toy sizes with a wall-clock timer, to
check the script itself on a machine without a GPU (``TRITON_INTERPRET=1`` exported);
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time
from collections.abc import Callable

import torch

from ieu_potion import kernels
from ieu_potion.kernels import reference

PARAMETER_COUNTS = {"ViT-S/16": 22_050_664, "ViT-B/16": 86_567_656}
CE_SHAPES = [(256, 10), (4096, 200), (4096, 1000)]
VIEWS = 2
PTN_PARALLEL = 8


def timer(smoke: bool) -> Callable[[Callable[[], object]], float]:
    """Seconds per call of ``fn``."""
    if smoke:

        def once(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        return once
    from triton.testing import do_bench

    return lambda fn: do_bench(fn, warmup=50, rep=300, return_mode="median") / 1e3


def timed_on(bench, backend: str, fn: Callable[[], object]) -> float:
    """``bench(fn)`` with the kernels forced onto ``backend``."""
    os.environ[kernels.BACKEND_VARIABLE] = backend
    try:
        return bench(fn)
    finally:
        del os.environ[kernels.BACKEND_VARIABLE]


def table_row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def elementwise(bench, device: str, label: str, n: int) -> list[str]:
    """Rows for one parameter count: copy bandwidth first, then each kernel and torch."""
    gen = torch.Generator(device=device).manual_seed(0)
    src = torch.randn(n, device=device, generator=gen)
    dst = torch.empty_like(src)
    copy_s = bench(lambda: dst.copy_(src))
    copy_gbs = 8 * n / copy_s / 1e9
    rows = [
        table_row(
            label,
            "copy fp32",
            f"{8 * n / 1e6:.0f}",
            f"{copy_s * 1e3:.3f}",
            f"{copy_gbs:.0f}",
            100,
            "",
            "",
        )
    ]
    i_f = torch.rand(n, device=device, generator=gen)
    i_r = torch.rand(n, device=device, generator=gen)
    total = torch.zeros(n, device=device)
    alphas = torch.linspace(1.0, 20.0, PTN_PARALLEL, device=device)
    grads = {torch.float32: src, torch.bfloat16: src.to(torch.bfloat16)}
    cases = [
        (
            f"accumulate_importance, {str(dtype)[6:]} grads",
            n * (g.element_size() + 8),
            functools.partial(kernels.accumulate_importance, g, total, "square", 0.01),
        )
        for dtype, g in grads.items()
    ]
    cases.append(("dampen, 1 alpha", 16 * n, lambda: kernels.dampen(src, i_f, i_r, 5.0, 1.0)))
    cases.append(
        (
            f"dampen, {PTN_PARALLEL} alphas",
            (12 + 4 * PTN_PARALLEL) * n,
            lambda: kernels.dampen(src, i_f, i_r, alphas, 1.0),
        )
    )
    for operation, moved, fn in cases:
        t_triton = timed_on(bench, "triton", fn)
        t_torch = timed_on(bench, "reference", fn)
        gbs = moved / t_triton / 1e9
        rows.append(
            table_row(
                label,
                operation,
                f"{moved / 1e6:.0f}",
                f"{t_triton * 1e3:.3f}",
                f"{gbs:.0f}",
                f"{100 * gbs / copy_gbs:.0f}",
                f"{t_torch * 1e3:.3f}",
                f"{t_torch / t_triton:.2f}",
            )
        )
    return rows


def ce_step(fn, gate, logits, labels) -> Callable[[], None]:
    """One forward + backward of ``fn`` (a masked cross-entropy) at tau 0.95."""

    def run():
        logits.grad = None
        loss, _, _ = fn(gate, logits, labels, 0.95, VIEWS)
        loss.backward()

    return run


def masked_ce(bench, device: str, batch: int, classes: int, compiled) -> list[str]:
    """Rows for one (B, C): Triton, eager torch, torch.compile, fp32 and bf16 logits."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        gen = torch.Generator(device=device).manual_seed(batch + classes)
        gate = torch.randn(batch, classes, device=device, generator=gen, dtype=dtype) * 4
        logits = torch.randn(VIEWS * batch, classes, device=device, generator=gen, dtype=dtype)
        logits.requires_grad_(True)
        labels = torch.randint(0, classes, (batch,), device=device, generator=gen)
        args = (gate, logits, labels)
        t_triton = timed_on(bench, "triton", ce_step(kernels.masked_cross_entropy, *args))
        t_eager = bench(ce_step(reference.masked_cross_entropy, *args))
        t_compiled = bench(ce_step(compiled, *args)) if compiled else float("nan")
        rows.append(
            table_row(
                batch,
                classes,
                str(dtype)[6:],
                f"{t_triton * 1e3:.3f}",
                f"{t_eager * 1e3:.3f}",
                f"{t_compiled * 1e3:.3f}",
                f"{t_eager / t_triton:.2f}",
                f"{t_compiled / t_triton:.2f}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, no GPU needed")
    args = parser.parse_args()
    if args.smoke:
        if not kernels.INTERPRETER:
            raise SystemExit("--smoke runs the Triton path on the CPU: export TRITON_INTERPRET=1")
        device, counts, shapes = "cpu", {"toy": 10_007}, [(7, 10), (5, 201)]
    else:
        if not torch.cuda.is_available():
            raise SystemExit(
                "no CUDA device: run on a GPU machine, or use --smoke to check the script"
            )
        device, counts, shapes = "cuda", PARAMETER_COUNTS, CE_SHAPES
    bench = timer(args.smoke)
    name = torch.cuda.get_device_name() if device == "cuda" else platform.machine()
    print(f"device: {name}; torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}\n")
    print(
        table_row(
            "params",
            "operation",
            "MB moved",
            "triton ms",
            "triton GB/s",
            "% of copy",
            "torch ms",
            "torch/triton",
        )
    )
    print(table_row(*["---"] * 8))
    for label, n in counts.items():
        print("\n".join(elementwise(bench, device, label, n)), flush=True)
    # torch.compile needs a C compiler for the CPU; the smoke run leaves it out.
    compiled = None if args.smoke else torch.compile(reference.masked_cross_entropy)
    print()
    print(
        table_row(
            "B",
            "C",
            "dtype",
            "triton ms",
            "eager ms",
            "compiled ms",
            "eager/triton",
            "compiled/triton",
        )
    )
    print(table_row(*["---"] * 8))
    for batch, classes in shapes:
        print("\n".join(masked_ce(bench, device, batch, classes, compiled)), flush=True)


if __name__ == "__main__":
    main()
