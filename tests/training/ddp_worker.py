"""Train a small model with the engine, as one process or as one rank under torchrun,
and write what rank 0 ends with to the JSON file named by the first argument: the
final weights, the per-epoch losses, IEU's unlearning steps and XLF importances.  The
phases: cross-entropy, IEU stage 2, ABL's flooding (a loss that is no mean over samples)
and gradient ascent on a single sample (an empty shard on the second rank).
tests/training/test_distributed.py compares the two."""

import dataclasses
import json
import sys

import numpy as np
import torch
from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.defences.abl import Ascent, IsolationObjective
from ieu_potion.defences.ieu import IEUConfig, IEUObjective
from ieu_potion.training import distributed
from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit
from ieu_potion.training.views import ViewMaker
from ieu_potion.unlearning.importance import flat_parameters, importances

CLASSES = 4


class BrightCornerGate(nn.Module):
    """Flags, with confidence ~1, the images whose top-left pixel is bright."""

    def forward(self, x):
        out = torch.zeros(len(x), CLASSES, device=x.device)
        out[:, 1] = torch.where(x[:, 0, 0, 0] > 0.6, 30.0, 0.0)
        return out


def data() -> ImageSet:
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(48, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(48) % CLASSES
    images[labels == 1, 2:5, 2:5] = 255  # something to learn
    return ImageSet.clean(images, labels, [f"c{i}" for i in range(CLASSES)])


def model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, CLASSES)
    )


def main(out: str) -> None:
    world = distributed.start()
    train = data()
    views = ViewMaker(size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    # batches of 9, 9, 9, 9 and 12: two ranks get unequal shards (5 and 4)
    # fp32 on the CPU, where the comparison is tight (CUDA would train under bf16 autocast)
    config = TrainConfig(epochs=2, batch_size=9, lr=3e-3, warmup_epochs=0.5, device="cpu")
    net = model()
    plain = fit(net, train, CrossEntropy(("clean",)), config, views, name="plain")
    ieu = IEUObjective(
        BrightCornerGate(),
        views,
        IEUConfig(tau=0.9, queue_capacity=4),
        0.9,
        CLASSES,
        batch_size=config.batch_size,
        clip=config.clip,
        poisoned=train.images[:, 0, 0, 0] > 229,
        device=config.torch_device(),
    )
    history = fit(net, train, ieu, config, views, name="ieu")
    # ABL's isolation loss is no mean over samples: whole batches on every rank
    flooding = fit(net, train, IsolationObjective("flooding", 1.3), config, views, name="flood")
    # one sample for two ranks: one rank's shard is empty
    single = dataclasses.replace(config, epochs=3, batch_size=1, warmup_epochs=0.0)
    fit(net, train.subset([5]), Ascent(), single, views, name="ascent")
    result = {
        "ranks": world.size,
        "plain_loss": [e["train_loss"] for e in plain.epochs],
        "ieu_loss": [e["train_loss"] for e in history.epochs],
        "flooding_loss": [e["train_loss"] for e in flooding.epochs],
        "unlearning_steps": [int(e["unlearning_steps"]) for e in history.epochs],
        "samples_queued": [int(e["samples_queued"]) for e in history.epochs],
        "gate_flagged": [int(e["gate_flagged"]) for e in history.epochs],
        "weights": flat_parameters(net).tolist(),
        "xlf": importances(net, train, "xlf", views, batch_size=10).tolist(),
    }
    if world.main:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
    distributed.stop()


if __name__ == "__main__":
    main(sys.argv[1])
