"""Check the IEU premise on a configuration: does the default data let IEU work?

Runs, outside Kedro: the data nodes (split, poison), the backbone, then every method
through the defence registry as the pipelines do (``defences/registry.py``): the
undefended finetune, (with ``--baselines``) the listed defences of the baselines pipeline,
and IEU (gate, threshold, stage 2); then prints the targets below and every method's CA,
ASR, time and memory.

    .venv/bin/python scripts/calibrate.py --attack badnets_white
    .venv/bin/python scripts/calibrate.py --env cifar10 --set cifar10_root=/data/cifar
    .venv/bin/python scripts/calibrate.py --set finetune.epochs=5 --set ieu.defence.tau=0.9
    .venv/bin/python scripts/calibrate.py --attack wanet --baselines abl,ibau,attnblock
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import yaml
from kedro.io import AbstractDataset

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.config import settings_from_params
from ieu_potion.defences.registry import Task, get_defence, run_defence, run_stage
from ieu_potion.pipelines.baselines.nodes import trusted_set
from ieu_potion.pipelines.data_poisoning.nodes import (
    codec_report,
    poison_train,
    split_source,
    train_stega_codec,
    trigger_test,
)
from ieu_potion.pipelines.templating import Replicate, own_regime, uses_codec
from ieu_potion.training.setup import ModelBlock, WeightsParams, prepare_backbone

TARGETS = "CA none >= 0.80, ASR none >= 0.90, gate P/R >= 0.80, ASR ieu <= 0.10, CA drop <= 0.05"


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = number_or_yaml(value)
    return out


def number_or_yaml(text: str):
    """``text`` as a number where it is one (YAML reads ``5e-3`` as a string), else as
    YAML (lists, booleans, strings)."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return yaml.safe_load(text)


def metric(rows, name: str) -> float:
    return float(rows.loc[rows.metric == name, "value"].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--attack", default="badnets_white", help="a data_poisoning namespace")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (as in `seeds`)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--undefended-only", action="store_true", help="stop after the undefended finetune"
    )
    parser.add_argument(
        "--baselines", default="", help="also run these defences (abl,ibau,attnblock)"
    )
    parser.add_argument(
        "--confidences", metavar="NPZ", help="also write the gate's training confidences here"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    params, catalog = project_config(args.env, parse_overrides(args.set))
    attack = params[args.attack]["attack"]
    source = AbstractDataset.from_config("source_images", catalog["source_images"]).load()
    pretrain, finetune, test = split_source(source, params["data_split"])
    replicate = Replicate(args.attack, args.seed, params)
    data_key = replicate.key("data")
    codec = None
    if uses_codec(params, args.attack):
        codec = train_stega_codec(pretrain, params["data_poisoning"].get("stega_codec"))
    train = poison_train(finetune, attack, codec, key=data_key)
    triggered = trigger_test(test, attack, codec, key=data_key)
    if codec is not None:
        report = codec_report(test, triggered, train, codec, attack, data_key)
        report.pop("poison_indices")
        print(f"codec: {report}")

    clock = time.perf_counter()
    models = settings_from_params(ModelBlock, params["model"], "model")
    backbone_seed = args.seed if params.get("backbone_per_seed") else 0  # as the pipeline
    spec = models.robust.spec(pretrain.num_classes)
    backbone, pre = prepare_backbone(
        spec, models.weights, pretrain, test, models.pretrain, backbone_seed
    )
    pre = pre.table()
    t_backbone = time.perf_counter() - clock
    baselines = params.get("baselines") or {}

    own = own_regime(params, args.attack)
    if own:  # entries over the finetune block: a --set finetune.<key> they name is overridden
        print(f"{args.attack} trains with its own regime {own} ({args.attack}.finetune)")

    def task(method: str, **optional) -> Task:
        key = replicate.key(method)
        return Task.of_run(
            backbone, train, test, triggered, params["finetune"], attack, key, own, **optional
        )

    def run(method: str, task: Task, settings=None, **done):
        defence = get_defence(method)
        settings = defence.configure(baselines.get(method)) if settings is None else settings
        outcome = run_defence(defence, task, settings, **done)
        return outcome, replicate.key(method).rows(method, outcome.metrics)

    none, none_rows = run("none", task("none"))
    others = {}
    trusted = trusted_set(pretrain, finetune, baselines) if args.baselines else None
    for method in args.baselines.split(",") if args.baselines else []:
        optional = {"undefended": none.model, "trusted": trusted}
        needs = get_defence(method).needs
        _, others[method] = run(method, task(method, **{n: optional[n] for n in needs}))
    if args.undefended_only:
        print(f"\n== {args.attack} on {params['dataset_name']} ({args.env}), undefended")
        print(
            f"train {len(train)} ({int(train.poisoned.sum())} poisoned): CA "
            f"{metric(none_rows, 'clean_accuracy'):.3f}  ASR "
            f"{metric(none_rows, 'attack_success_rate'):.3f}"
        )
        return
    gate_backbone = None
    if models.gate_pretrain:
        depth = models.gate_pretrain.depth
        gate_spec = models.gate.spec(pretrain.num_classes, depth=depth)
        weights = WeightsParams(source="pretrain")
        gate_backbone, gate_pre = prepare_backbone(
            gate_spec, weights, pretrain, test, models.gate_pretrain, backbone_seed
        )
        print(f"gate pretraining: CA {gate_pre.table()['clean_accuracy'].iloc[-1]:.3f}")
    ieu = get_defence("ieu")
    ieu_settings = ieu.configure(params["ieu"])
    ieu_task = task("ieu", models=models, gate_backbone=gate_backbone)
    gate, gate_history = run_stage(ieu, "train_gate", ieu_task, ieu_settings)
    (conf,) = run_stage(ieu, "gate_threshold", ieu_task, ieu_settings, ieu_gate=gate)
    if args.confidences:
        np.savez(args.confidences, **conf)
    _, ieu_rows = run("ieu", ieu_task, ieu_settings, ieu_gate=gate, gate_confidence=conf)

    tau = float(conf["tau"])
    kept = int(gate_history.epoch[gate_history.kept].iloc[0])
    c, p = conf["confidence"], conf["poisoned"]
    flagged = c > tau
    print(f"\n== {args.attack} on {params['dataset_name']} ({args.env}); targets: {TARGETS}")
    print(
        f"train {len(train)} ({int(p.sum())} poisoned), pretrain {len(pretrain)}, "
        f"test {len(test)}; backbone {time.perf_counter() - clock:.0f}s total, "
        f"backbone {t_backbone:.0f}s, pretrain CA "
        f"{pre['clean_accuracy'].iloc[-1] if len(pre) else float('nan'):.3f}"
    )
    print(
        f"gate confidence quartiles clean {np.quantile(c[~p], [0.25, 0.5, 0.75]).round(3)} "
        f"poisoned {np.quantile(c[p], [0.25, 0.5, 0.75]).round(3)}"
    )
    print(
        f"gate epoch {kept} of {len(gate_history)}, tau {tau:.4f}: "
        f"precision {(flagged & p).sum() / max(1, flagged.sum()):.3f} "
        f"recall {(flagged & p).sum() / max(1, p.sum()):.3f}"
    )
    for name, rows in (("none", none_rows), *others.items(), ("ieu", ieu_rows)):
        found = dict(zip(rows.metric, rows.value, strict=True))
        extra = {
            k: found[k]
            for k in ("isolation_precision", "isolation_recall", "perturbation_rms")
            if k in found
        }
        print(
            f"{name:>9}: CA {found.get('clean_accuracy', np.nan):.3f}  "
            f"ASR {found.get('attack_success_rate', np.nan):.3f}  "
            f"{found['seconds']:.0f} s  peak {found.get('peak_memory_mb', np.nan):.0f} MiB  "
            + "  ".join(f"{k} {v:.3f}" for k, v in extra.items())
        )
    print(
        f"  ieu: unlearning steps {metric(ieu_rows, 'unlearning_steps'):.0f}, "
        f"queued {metric(ieu_rows, 'samples_queued'):.0f}"
    )


if __name__ == "__main__":
    main()
