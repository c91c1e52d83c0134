"""Wall time of an IEU epoch against an undefended epoch: same data, model and recipe.

Both methods start from the same backbone and run one epoch each, alternating, ``--repeats``
times; the script prints each time and the ratio of medians.  The backbone is trained from
scratch for ``--pretrain-epochs`` first (its quality does not change the cost of an epoch).

    .venv/bin/python benchmarks/ieu_epoch_time.py --attack badnets_white --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import platform
import statistics
import time

import torch
from kedro.io import AbstractDataset

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.config import settings_from_params
from ieu_potion.defences.ieu import IEUObjective
from ieu_potion.defences.registry import Task, get_defence, run_stage
from ieu_potion.pipelines.data_poisoning.nodes import poison_train, split_source
from ieu_potion.pipelines.templating import Replicate
from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit
from ieu_potion.training.setup import ModelBlock, prepare_backbone, view_maker


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
    train = poison_train(finetune, params[args.attack]["attack"], key=replicate.key("data"))
    models = settings_from_params(ModelBlock, params["model"], "model")
    pretrain_recipe = dataclasses.replace(models.pretrain.train, epochs=args.pretrain_epochs)
    backbone, _ = prepare_backbone(
        models.robust.spec(pretrain.num_classes),
        models.weights,
        pretrain,
        test,
        models.pretrain.model_copy(update={"train": pretrain_recipe}),
    )
    ieu = get_defence("ieu")
    settings = ieu.configure(params["ieu"])
    attack = params[args.attack]["attack"]
    task = Task.of_run(
        backbone, train, test, test, params["finetune"], attack, replicate.key("ieu"), models=models
    )
    gate, _ = run_stage(ieu, "train_gate", task, settings)
    (confidence,) = run_stage(ieu, "gate_threshold", task, settings, ieu_gate=gate)
    tau = float(confidence["tau"])

    one_epoch = {**params["finetune"], "epochs": 1}
    config = TrainConfig.from_params(one_epoch)
    defence = settings.defence
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
