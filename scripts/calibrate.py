"""Check the IEU premise on a configuration: does the default data let IEU work?

Runs, outside Kedro but through the same node functions as the pipelines: split, poison,
backbone, undefended finetune, (with ``--baselines``) the listed defences of the baselines
pipeline, gate (stage 1), IEU (stage 2); then prints the numbers that
../shared/DEFAULT_DATA.md sets as targets, and every method's CA, ASR, time and memory.

    .venv/bin/python scripts/calibrate.py --attack badnets_white
    .venv/bin/python scripts/calibrate.py --env cifar10 --set cifar10_root=/data/cifar
    .venv/bin/python scripts/calibrate.py --set finetune.epochs=5 --set ieu.defence.tau=0.9
    .venv/bin/python scripts/calibrate.py --attack wanet --baselines abl,ibau,attnblock
"""

from __future__ import annotations

import argparse
import functools
import logging
import time

import numpy as np
import yaml
from kedro.io import AbstractDataset

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.pipelines.baselines.nodes import defend, trusted_set
from ieu_potion.pipelines.data_poisoning.nodes import (
    codec_report,
    poison_train,
    split_source,
    train_stega_codec,
    trigger_test,
)
from ieu_potion.pipelines.ieu_finetune import nodes as ieu
from ieu_potion.pipelines.templating import Replicate, uses_codec

TARGETS = "CA none >= 0.80, ASR none >= 0.90, gate P/R >= 0.80, ASR ieu <= 0.10, CA drop <= 0.05"


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


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
    backbone, pre = ieu.backbone(pretrain, test, params["model"], 0)
    t_backbone = time.perf_counter() - clock
    baselines = params.get("baselines") or {}
    run = functools.partial(
        defend, backbone, train, test, triggered, params["finetune"], baselines, attack
    )
    none, _, none_rows = run("none", replicate.key("none"))
    others = {}
    trusted = trusted_set(pretrain, finetune, baselines) if args.baselines else None
    for method in args.baselines.split(",") if args.baselines else []:
        *_, others[method] = run(method, replicate.key(method), undefended=none, trusted=trusted)
    if args.undefended_only:
        print(f"\n== {args.attack} on {params['dataset_name']} ({args.env}), undefended")
        print(
            f"train {len(train)} ({int(train.poisoned.sum())} poisoned): CA "
            f"{metric(none_rows, 'clean_accuracy'):.3f}  ASR "
            f"{metric(none_rows, 'attack_success_rate'):.3f}"
        )
        return
    ieu_key = replicate.key("ieu")
    start = backbone
    if params["model"].get("gate_pretrain"):
        start, gate_pre = ieu.gate_backbone(pretrain, test, params["model"], 0)
        print(f"gate pretraining: CA {gate_pre['clean_accuracy'].iloc[-1]:.3f}")
    gate, gate_history = ieu.train_gate(
        start, train, params["model"], params["ieu"], params["finetune"], ieu_key
    )
    conf = ieu.gate_threshold(gate, train, params["ieu"], params["finetune"])
    if args.confidences:
        np.savez(args.confidences, **conf)
    _, _, ieu_rows = ieu.finetune_ieu(
        backbone,
        gate,
        conf,
        train,
        test,
        triggered,
        params["finetune"],
        params["ieu"],
        attack,
        ieu_key,
    )

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
