"""PTN's settings out of sample: poison healed, model damage and searches given up per value.

Reads the undefended models and data that a run of ``--env`` left (the potion pipeline's
inputs), computes each share's importances once per kind (on D minus S_f where the
environment's ``retain_set`` is ``exact``) and repeats the search for every value of each
``--vary`` setting, the others at the environment's values or ``--fix``'s.  Per setting,
kind and value it prints healed and damage averaged over the shares, mean and 95%
interval over the seeds (N seeds), one-shot apart, and how many searches gave up at which
bound.

    .venv/bin/python scripts/ptn_sensitivity.py --env potion_paper --namespaces paper_1 \\
        --vary min_percentile=90,95,99 --vary max_dampened=0.02,0.05,0.2
    .venv/bin/python scripts/ptn_sensitivity.py --vary rho=0,0.05,0.1,0.2,0.5 --kinds xlf
    .venv/bin/python scripts/ptn_sensitivity.py --env potion_paper --kinds ssd \\
        --vary min_percentile=1e-6,90 --fix max_dampened=1    # both bounds lifted at 1e-6
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import numpy as np
import pandas as pd
from kedro.io import DataCatalog

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.config import settings_from_params
from ieu_potion.reporting.stats import interval, with_interval
from ieu_potion.reporting.tables import markdown_table
from ieu_potion.schema import validate_parameters
from ieu_potion.training.setup import view_maker
from ieu_potion.unlearning.importance import flat_parameters, importances
from ieu_potion.unlearning.potion import Evaluator, select_shares
from ieu_potion.unlearning.ptn import PTNConfig, ptn_search

SETTINGS = ("rho", "min_percentile", "max_dampened", "step")


def searches(catalog, params, namespace: str, seed: int, kinds, grid, shares=(), fixed=None):
    """One row per (share, kind, setting, value) of one run: healed, damage, gave up and
    why.  ``fixed`` settings replace the environment's in every search."""
    run = f"{namespace}.seed_{seed}"
    model = catalog.load(f"{run}.none_model")
    train = catalog.load(f"{run}.poisoned_train")
    config = params.potion_for(namespace)
    base = dataclasses.replace(config.ptn, **(fixed or {}))
    subsets = select_shares(catalog.load(f"{run}.discovery_subsets"), shares or config.shares)
    views = view_maker(model, params.finetune_for(namespace))
    attack = params.namespaces()[namespace].attack
    evaluator = Evaluator(
        model,
        views,
        catalog.load("clean_test"),
        catalog.load(f"{run}.triggered_test"),
        attack.target_class,
    )
    theta0 = flat_parameters(model)
    before = evaluator.metrics(theta0)

    def importance(kind, data):
        return importances(model, data, kind, views, config.importance_batch_size, seed)

    full = {k: importance(k, train) for k in kinds} if config.retain_set == "full" else {}
    rows = []
    for share, indices in subsets.items():
        forget = train.subset(indices)
        retain = train.subset(np.setdiff1d(np.arange(len(train)), indices))
        for kind in kinds:
            imp_f = importance(kind, forget)
            imp_r = full[kind] if full else importance(kind, retain)
            for setting, values in grid.items():
                for value in values:
                    ptn = dataclasses.replace(base, **{setting: value})
                    result = ptn_search(
                        theta0,
                        imp_f,
                        imp_r,
                        lambda t, f=forget: evaluator.accuracy(t, f),
                        len(forget),
                        len(retain),
                        ptn,
                    )
                    after = evaluator.metrics(result.parameters)
                    damage = 100 * (after["clean_accuracy"] - before["clean_accuracy"])
                    rows.append(
                        {
                            "namespace": namespace,
                            "seed": seed,
                            "share": share,
                            "kind": kind,
                            "setting": setting,
                            "value": value,
                            "healed": after["poison_healed"],
                            "damage": damage,
                            "gave_up": not result.converged,
                            "stop": result.stop,
                        }
                    )
        print(f"{run} {share}: done", flush=True)
    return rows


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (namespace, setting, kind, value): the benchmark shares averaged per seed, then
    mean and 95% interval over seeds; one-shot apart; searches given up over every share."""
    out = []
    for (namespace, setting, kind, value), part in rows.groupby(
        ["namespace", "setting", "kind", "value"]
    ):
        shares = part[part.share.str.startswith("share_")]
        per_seed = shares.groupby("seed")[["healed", "damage"]].mean()
        healed, damage = interval(per_seed.healed), interval(per_seed.damage)
        one_shot = part[part.share == "one_shot"]
        out.append(
            {
                "namespace": namespace,
                "setting": setting,
                "value": f"{value:g}",
                "kind": kind,
                "N (seeds)": healed[2],
                "healed %": with_interval(healed[0], healed[1], 100),
                "damage pp": with_interval(damage[0], damage[1]),
                "one-shot healed %": with_interval(*interval(one_shot.healed)[:2], 100),
                "gave up": gave_up(part),
            }
        )
    return pd.DataFrame(out)


def gave_up(part: pd.DataFrame) -> str:
    """ "k of n", and which bound stopped the k searches (``SearchResult.stop``)."""
    stops = part[part.gave_up].stop.value_counts()
    why = ", ".join(f"{stop} {count}" for stop, count in stops.items())
    return f"{int(part.gave_up.sum())} of {len(part)}" + (f" ({why})" if why else "")


def parse_grid(items: list[str], option: str = "--vary") -> dict[str, list[float]]:
    """``SETTING=V1,V2,...`` items as {setting: values}, each value checked by PTNConfig."""
    grid = {}
    for item in items:
        setting, _, values = item.partition("=")
        if setting not in SETTINGS or not values:
            raise SystemExit(
                f"{option} {item!r}: give SETTING=V1,V2,... with SETTING one of {SETTINGS}"
            )
        grid[setting] = [float(v) for v in values.split(",")]
        for value in grid[setting]:  # out-of-range values are refused before any work
            settings_from_params(PTNConfig, {setting: value}, f"{option} {setting}")
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--namespaces", nargs="+", default=None, help="default: potion's")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the run's")
    parser.add_argument("--kinds", nargs="+", default=["xlf", "lf", "ssd"])
    parser.add_argument("--shares", nargs="+", default=(), help="default: the run's")
    parser.add_argument("--vary", action="append", required=True, help="SETTING=V1,V2,...")
    parser.add_argument(
        "--fix",
        action="append",
        default=[],
        help="SETTING=V: this value in every search (e.g. a bound lifted while the other varies)",
    )
    parser.add_argument("--csv", help="also write every search's row here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    grid = parse_grid(args.vary)
    fixed = {}
    for setting, values in parse_grid(args.fix, "--fix").items():
        if len(values) != 1 or setting in grid:
            raise SystemExit(f"--fix {setting}: give one value, for a setting not in --vary")
        fixed[setting] = values[0]

    raw, catalog_config = project_config(args.env)
    params = validate_parameters(raw)
    catalog = DataCatalog.from_config(catalog_config)
    rows = [
        row
        for namespace in args.namespaces or params.potion_unlearning.attacks
        for seed in (params.seeds if args.seeds is None else args.seeds)
        for row in searches(catalog, params, namespace, seed, args.kinds, grid, args.shares, fixed)
    ]
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print(markdown_table(summary(frame)))


if __name__ == "__main__":
    main()
