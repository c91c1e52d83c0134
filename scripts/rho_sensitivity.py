"""PTN's over-forgetting buffer rho: poison healed and model damage per value.

Uses the undefended model and data of a default run; importances are computed once per
share and the search is repeated for each rho.

    .venv/bin/python scripts/rho_sensitivity.py --kind xlf --shares share_0.1 share_0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from kedro.io import DataCatalog

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.training.engine import TrainConfig
from ieu_potion.training.setup import view_maker
from ieu_potion.unlearning.importance import flat_parameters, importances
from ieu_potion.unlearning.potion import Evaluator, PotionConfig
from ieu_potion.unlearning.ptn import ptn_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--attack", default="badnets_white")
    parser.add_argument("--seed", type=int, default=0, help="which seed's run to read")
    parser.add_argument("--kind", default="xlf", choices=("ssd", "lf", "xlf"))
    parser.add_argument("--shares", nargs="+", default=["share_0.1", "share_0.5"])
    parser.add_argument(
        "--rhos", nargs="+", type=float, default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75]
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params, catalog_config = project_config(args.env)
    catalog = DataCatalog.from_config(catalog_config)
    run = f"{args.attack}.seed_{args.seed}"
    model = catalog.load(f"{run}.none_model")
    train = catalog.load(f"{run}.poisoned_train")
    subsets = catalog.load(f"{run}.discovery_subsets")
    config = PotionConfig.from_params(params["potion"])
    views = view_maker(model, TrainConfig.from_params(params["finetune"]))
    evaluator = Evaluator(
        model,
        views,
        catalog.load("clean_test"),
        catalog.load(f"{run}.triggered_test"),
        params[args.attack]["attack"]["target_class"],
    )
    theta0 = flat_parameters(model)
    before = evaluator.metrics(theta0)
    imp_r = importances(model, train, args.kind, views, config.importance_batch_size)
    print(
        f"{args.kind}+PTN on {args.attack}: before CA {before['clean_accuracy']:.3f}, "
        f"healed {before['poison_healed']:.3f}"
    )
    print("share       rho   steps  alpha      healed  damage_pp")
    for share in args.shares:
        forget = train.subset(subsets[share])
        imp_f = importances(model, forget, args.kind, views, config.importance_batch_size)
        for rho in args.rhos:
            ptn = dataclasses.replace(config.ptn, rho=rho)
            result = ptn_search(
                theta0,
                imp_f,
                imp_r,
                lambda t, f=forget: evaluator.accuracy(t, f),
                len(forget),
                len(train) - len(forget),
                ptn,
            )
            after = evaluator.metrics(result.parameters)
            damage = 100 * (after["clean_accuracy"] - before["clean_accuracy"])
            print(
                f"{share:<10} {rho:5.2f} {result.steps:6d}  {result.alpha:<9.4g} "
                f"{after['poison_healed']:.3f}   {damage:+.2f}"
            )


if __name__ == "__main__":
    main()
