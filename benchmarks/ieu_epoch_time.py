"""Wall time of an IEU epoch against an undefended epoch: same data, model and recipe.

Both methods start from the same backbone and run one epoch each, alternating, ``--repeats``
times; the script prints each time and the ratio of medians.  The backbone is trained from
scratch for ``--pretrain-epochs`` first (its quality does not change the cost of an epoch).

    .venv/bin/python benchmarks/ieu_epoch_time.py --attack badnets_white --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import logging
import platform
import statistics
import time

import torch
from kedro.io import AbstractDataset

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.defences.ieu import IEUConfig, IEUObjective
from ieu_potion.pipelines.data_poisoning.nodes import poison_train, split_source
from ieu_potion.pipelines.ieu_finetune import nodes as ieu
from ieu_potion.pipelines.templating import Replicate
from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit
from ieu_potion.training.setup import view_maker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--attack", default="badnets_white")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params, catalog = project_config(args.env)
    source = AbstractDataset.from_config("source_images", catalog["source_images"]).load()
    pretrain, finetune, test = split_source(source, params["data_split"])
    replicate = Replicate(args.attack, 0, params)
    train = poison_train(finetune, params[args.attack]["attack"], replicate.key("data"))
    model_params = copy.deepcopy(params["model"])
    model_params["pretrain"]["train"]["epochs"] = args.pretrain_epochs
    backbone, _ = ieu.backbone(pretrain, test, model_params, 0)
    gate, _ = ieu.train_gate(
        backbone, train, params["model"], params["ieu"], params["finetune"], replicate.key("ieu")
    )
    tau = float(ieu.gate_threshold(gate, train, params["ieu"], params["finetune"])["tau"])

    one_epoch = {**params["finetune"], "epochs": 1}
    config = TrainConfig.from_params(one_epoch)
    defence = IEUConfig.from_params(params["ieu"]["defence"])
    times: dict[str, list[float]] = {"none": [], "ieu": []}
    for _ in range(args.repeats):
        for method in times:
            model = copy.deepcopy(backbone)
            if method == "none":
                objective = CrossEntropy(("clean", "corrupted"))
            else:
                objective = IEUObjective(
                    gate,
                    view_maker(gate),
                    defence,
                    tau,
                    train.num_classes,
                    config.batch_size,
                    config.clip,
                    train.poisoned,
                    config.torch_device(),
                )
            start = time.perf_counter()
            fit(model, train, objective, config, view_maker(model, config), name=method)
            times[method].append(time.perf_counter() - start)

    none, ieu_time = statistics.median(times["none"]), statistics.median(times["ieu"])
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, device {config.torch_device()}"
    )
    print(
        f"data: {len(train)} training images ({args.attack}), model {backbone.spec.name}, "
        f"batch {config.batch_size}"
    )
    print(f"undefended epoch seconds: {[round(t, 2) for t in times['none']]}")
    print(f"IEU epoch seconds:        {[round(t, 2) for t in times['ieu']]}")
    print(f"ratio IEU / undefended (medians): {ieu_time / none:.3f}")


if __name__ == "__main__":
    main()
