"""One training step of the default's robust module on the CPU: torch's convolutions and
the foreach AdamW (before) against small-map convolutions, the fused AdamW and
channels-last weights (the engine), each change added in turn; then the model under
``torch.compile`` (inductor's C++ code for the CPU), with torch's convolutions and with
the engine's.

resnet10t at 32 px, batch ``--batch``; forward, backward and AdamW step.  Each variant
takes ``--steps`` steps from the same weights on the same batch, alternating over
``--repeats`` rounds, after a warm-up that also compiles; prints the median milliseconds
per step, the ratio to the first variant and the largest relative difference of the
weights from it after the steps.
Then the engine variant's floating-point work per step (torch's FLOP counter: convolutions
and matrix products) against a float32 matrix product's rate on this machine: how close
the step runs to the CPU's peak.

    .venv/bin/python benchmarks/train_step.py --steps 20 --repeats 3
    .venv/bin/python benchmarks/train_step.py --matmul-only   # this CPU's rate alone (seconds)

The README states the default run's wall time with the rate of the machine it was measured
on, so that a user can scale it to their own CPU with ``--matmul-only``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from ieu_potion.models.small_maps import use_small_map_convolutions

ENGINE = "+ channels-last (engine)"
# (small-map convolutions, AdamW's keyword, channels-last weights, torch.compile)
VARIANTS = {
    "torch convs, foreach AdamW": (False, {"foreach": True}, False, False),
    "small-map convs, foreach": (True, {"foreach": True}, False, False),
    "small-map convs, fused": (True, {"fused": True}, False, False),
    ENGINE: (True, {"fused": True}, True, False),
    "compiled, torch convs, fused, CL": (False, {"fused": True}, True, True),
    "compiled engine": (True, {"fused": True}, True, True),
}


def run(model, x, y, n: int, small_maps: bool, kind: dict, channels_last: bool, compiled: bool):
    model = copy.deepcopy(model)
    if small_maps:
        use_small_map_convolutions(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **kind)
    forward = torch.compile(model) if compiled else model
    start = time.perf_counter()
    for _ in range(n):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(forward(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / n, model


def matmul_rate(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a float32 square matrix product, the CPU's practical peak."""
    a = torch.randn(size, size)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return repeats * 2 * size**3 / (time.perf_counter() - start)


def step_flops(model, x, y) -> int:
    """Floating-point operations of one forward and backward pass in its convolutions and
    matrix products, the ones torch's counter knows (batch norm, elementwise work and
    AdamW's update are left out: about a fifth of a step's time in torch.profiler)."""
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(copy.deepcopy(model)(x), y).backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-only", action="store_true", help="print the matmul rate only")
    args = parser.parse_args()
    if args.matmul_only:
        rates = sorted(matmul_rate() for _ in range(5))
        threads = torch.get_num_threads()
        print(f"float32 matmul: {rates[2] / 1e9:.1f} GFLOP/s (median of 5; {threads} threads)")
        return
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    for name, variant in VARIANTS.items():  # warm-up; the compiled variants compile here
        seconds, _ = run(model, x, y, 2, *variant)
        print(f"warm-up of {name}: {2 * seconds:.1f} s", flush=True)
    times = {name: [] for name in VARIANTS}
    final = {}
    for _ in range(args.repeats):
        for name, variant in VARIANTS.items():
            seconds, final[name] = run(model, x, y, args.steps, *variant)
            times[name].append(seconds)
    base_name = next(iter(VARIANTS))
    base = statistics.median(times[base_name])
    reference = {k: p.detach() for k, p in final[base_name].named_parameters()}
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} steps")
    for name in VARIANTS:
        ms = statistics.median(times[name])
        diff = max(
            float((p.detach() - reference[k]).abs().max() / reference[k].abs().max())
            for k, p in final[name].named_parameters()
        )
        print(f"{name:<34} {1000 * ms:8.1f} ms/step  ratio {ms / base:5.2f}  weights {diff:.1e}")
    flops, peak = step_flops(model, x, y), matmul_rate()
    achieved = flops / statistics.median(times[ENGINE])
    print(
        f"engine: {flops / 1e9:.2f} GFLOP/step, {achieved / 1e9:.1f} GFLOP/s; float32 matmul "
        f"{peak / 1e9:.1f} GFLOP/s: the step runs at {achieved / peak:.0%} of it"
    )


if __name__ == "__main__":
    main()
