"""Training speed in a Dask worker process against the driver process, side by side.

The same loop (resnet10t at 16 px, batch 64, AdamW, ``--steps`` steps, one torch thread)
runs in this process, in a worker of a local cluster with Dask's default environment, and
in a worker started with the settings ``DaskRunner`` uses (``LOCAL_WORKER_CONFIG``); each
``--repeats`` times.  Prints the seconds and the ratios of medians to this process.

    .venv/bin/python benchmarks/dask_worker.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import dask
import timm
import torch
from distributed import Client, LocalCluster

from ieu_potion.runner import LOCAL_WORKER_CONFIG


def train_steps(steps: int) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def in_worker(config: dict, steps: int, repeats: int) -> list[float]:
    with dask.config.set(config):
        cluster = LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        )
    with cluster, Client(cluster) as client:
        return [client.submit(train_steps, steps, pure=False).result() for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = {
        "this process": [train_steps(args.steps) for _ in range(args.repeats)],
        "worker, Dask's environment": in_worker({}, args.steps, args.repeats),
        "worker, DaskRunner's environment": in_worker(
            LOCAL_WORKER_CONFIG, args.steps, args.repeats
        ),
    }
    base = statistics.median(times["this process"])
    for name, seconds in times.items():
        ratio = statistics.median(seconds) / base
        print(f"{name:34s} {[round(s, 2) for s in seconds]}  ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
