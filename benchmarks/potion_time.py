"""Time of XLF+PTN against EU retraining, side by side, on the artifacts of a default run.

Needs the undefended model and data of `kedro run` (or `kedro run --pipeline
potion_unlearning`). For one discovery share it times: the XLF importances on the whole
training set (done once per run) and on S_f, the PTN search (steps and seconds), and EU
(re-finetuning the backbone on D minus S_f with the original recipe); then prints the
ratio of XLF+PTN's total to EU's.

    .venv/bin/python benchmarks/potion_time.py --attack badnets_white --share share_0.5
"""

from __future__ import annotations

import argparse
import logging
import platform
import time

import numpy as np
import torch
from kedro.io import DataCatalog

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.defences.registry import Task
from ieu_potion.training.engine import CrossEntropy, FinetuneConfig
from ieu_potion.unlearning.importance import flat_parameters, importances
from ieu_potion.unlearning.potion import Evaluator, PotionConfig
from ieu_potion.unlearning.ptn import ptn_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--attack", default="badnets_white")
    parser.add_argument("--share", default="share_0.5")
    parser.add_argument("--seed", type=int, default=0, help="which seed's run to read")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params, catalog_config = project_config(args.env)
    catalog = DataCatalog.from_config(catalog_config)
    ns = f"{args.attack}.seed_{args.seed}"
    model = catalog.load(f"{ns}.none_model")
    backbone = catalog.load("backbone")
    train = catalog.load(f"{ns}.poisoned_train")
    clean, triggered = catalog.load("clean_test"), catalog.load(f"{ns}.triggered_test")
    indices = catalog.load(f"{ns}.discovery_subsets")[args.share]
    attack = params[args.attack]["attack"]
    config = PotionConfig.from_params(params["potion"])
    task = Task(
        backbone,
        train,
        clean,
        triggered,
        FinetuneConfig.from_params(params["finetune"]),
        attack["target_class"],
    )
    views = task.views(model)
    forget = train.subset(indices)
    keep = np.ones(len(train), bool)
    keep[indices] = False
    retain = train.subset(np.flatnonzero(keep))

    start = time.perf_counter()
    imp_r = importances(model, train, "xlf", views, config.importance_batch_size)
    t_retain = time.perf_counter() - start
    start = time.perf_counter()
    imp_f = importances(model, forget, "xlf", views, config.importance_batch_size)
    t_forget = time.perf_counter() - start
    evaluator = Evaluator(model, views, clean, triggered, attack["target_class"])
    theta0 = flat_parameters(model)
    start = time.perf_counter()
    result = ptn_search(
        theta0,
        imp_f,
        imp_r,
        lambda t: evaluator.accuracy(t, forget),
        len(forget),
        len(retain),
        config.ptn,
    )
    t_search = time.perf_counter() - start
    metrics = evaluator.metrics(result.parameters)

    start = time.perf_counter()
    _, history = task.finetune(CrossEntropy(task.recipe.views), "eu", data=retain)
    history = history.table()
    t_eu = time.perf_counter() - start

    total = t_retain + t_forget + t_search
    print(
        f"machine: {platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"model {model.spec.name}, {len(train)} training images, S_f {len(forget)} "
        f"({args.share})"
    )
    print(f"XLF importance on D (once per run): {t_retain:.2f} s; on S_f: {t_forget:.2f} s")
    print(
        f"PTN search: {result.steps} steps in {t_search:.2f} s "
        f"({t_search / result.steps:.3f} s/step), alpha {result.alpha:.4g}"
    )
    print(
        f"XLF+PTN: healed {metrics['poison_healed']:.3f}, CA {metrics['clean_accuracy']:.3f}, "
        f"total {total:.2f} s"
    )
    print(
        f"EU: healed {history['poison_healed'].iloc[-1]:.3f}, CA "
        f"{history['clean_accuracy'].iloc[-1]:.3f}, {t_eu:.1f} s"
    )
    print(f"ratio XLF+PTN / EU time: {total / t_eu:.4f}")


if __name__ == "__main__":
    main()
