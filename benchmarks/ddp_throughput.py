"""Data-parallel finetuning throughput: two torchrun ranks against one process.

The engine's ``fit`` trains resnet10t at 32 px on the embedded default's finetuning-sized
data (the cluttered digits, ``--samples`` images, global batch ``--batch``, the clean
view) for ``--epochs`` epochs, as

- one process with one torch thread,
- one process with two torch threads (the default on this machine),
- two gloo ranks under torchrun, one thread each (the same global batch).

Prints samples per second, the ratios to one thread, and each variant's per-epoch
training loss (the loss curves should agree; BatchNorm's per-rank batch statistics are
the one difference).

    .venv/bin/python benchmarks/ddp_throughput.py --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "1 process, 1 thread": (1, "1"),
    "1 process, 2 threads": (1, "2"),
    "2 ranks, 1 thread each": (2, "1"),
}


def worker(out: str, samples: int, batch: int, epochs: int) -> None:
    import torch

    from ieu_potion.data.digits import make_digits
    from ieu_potion.models import ModelSpec, build_model
    from ieu_potion.training import distributed
    from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit
    from ieu_potion.training.views import ViewMaker

    world = distributed.start()
    train = make_digits()["train"]
    train = train.subset(range(min(samples, len(train))))
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet10t", train.num_classes, image_size=32))
    views = ViewMaker(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, warmup_epochs=0.5)
    history = fit(model, train, CrossEntropy(("clean",)), config, views, name="ddp benchmark")
    if world.main:
        record = {
            "samples_per_second": len(train) * epochs / history.seconds,
            "loss": [e["train_loss"] for e in history.epochs],
            "threads": torch.get_num_threads(),
        }
        Path(out).write_text(json.dumps(record))
    distributed.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [str(args.samples), str(args.batch), str(args.epochs)]
    if args.worker:
        worker(args.worker, args.samples, args.batch, args.epochs)
        return
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (ranks, threads) in VARIANTS.items():
            out = Path(scratch) / f"{ranks}_{threads}.json"
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            launcher += ["--nproc_per_node", str(ranks)]
            command = [*(launcher if ranks > 1 else [sys.executable]), __file__]
            command += ["--samples", sizes[0], "--batch", sizes[1], "--epochs", sizes[2]]
            env = {**os.environ, "OMP_NUM_THREADS": threads}
            subprocess.run([*command, "--worker", str(out)], env=env, check=True)
            results[name] = json.loads(out.read_text())
    base = results["1 process, 1 thread"]["samples_per_second"]
    print(f"\n{'variant':<24} {'samples/s':>10} {'ratio':>6}  loss per epoch")
    for name, r in results.items():
        losses = " ".join(f"{v:.4f}" for v in r["loss"])
        rate = r["samples_per_second"]
        print(f"{name:<24} {rate:>10.1f} {rate / base:>6.2f}  {losses}")


if __name__ == "__main__":
    main()
