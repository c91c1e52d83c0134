"""What ``deterministic: true`` costs on CUDA, and whether it makes training repeatable.

Trains, in fresh processes, alternately without and with torch's deterministic
algorithms (``ieu_potion.training.engine.set_deterministic``), each mode twice:

- resnet10t at 32 px (the embedded default): the undefended finetune and IEU's stage 2,
  two epochs each, on the default cluttered digits poisoned with badnets_white;
- ViT-S/16 at 224 px (the cifar10 environment's model): one undefended epoch on 2048
  of the same images.

Prints seconds per configuration and mode (median of the two runs), the ratio, and
whether the two runs of each mode gave bit-identical weights.  Needs a CUDA device and
only the library (no Kedro):

    PYTHONPATH=src python benchmarks/determinism_cuda.py

``--device cpu --smoke`` checks the script itself at toy sizes on a CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("free", "deterministic")


def prepare(folder: Path, smoke: bool) -> None:
    """The default data at the benchmark's recipe (8 copies per digit, as measured in
    docs/benchmarks.md), split and poisoned once, saved for the workers."""
    from ieu_potion.adapters.config_loader import project_config
    from ieu_potion.attacks import AttackConfig, poison_training_set
    from ieu_potion.data.digits import make_digits
    from ieu_potion.data.split import split_pretraining

    attacks, catalog = project_config("benchmark")
    settings = {k: v for k, v in catalog["source_images"].items() if k not in ("type", "metadata")}
    if smoke:
        settings.update(copies=1, test_copies=1)
    source = make_digits(**settings)
    _, finetune = split_pretraining(source["train"], 0.5, 0)
    poisoned = poison_training_set(
        finetune, AttackConfig.from_params(attacks["badnets_white"]["attack"])
    )
    poisoned.save(folder / "train.npz")


def digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def worker(folder: Path, mode: str, device: str, smoke: bool) -> dict:
    import torch

    from ieu_potion.data.imageset import ImageSet
    from ieu_potion.defences.ieu import IEUConfig, IEUObjective
    from ieu_potion.models import ModelSpec, build_model
    from ieu_potion.training.engine import CrossEntropy, TrainConfig, fit, set_deterministic
    from ieu_potion.training.setup import make_gate, view_maker

    set_deterministic(mode == "deterministic")
    train = ImageSet.load(folder / "train.npz")
    if smoke:  # checks the script on a CPU: toy sizes, numbers mean nothing
        train = train.subset(range(128))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}

    def run(name, spec, data, epochs, ieu=False, record=True):
        torch.manual_seed(0)
        model = build_model(spec).to(device)
        config = TrainConfig(epochs=epochs, batch_size=64, lr=1.5e-3, seed=0, device=device)
        if ieu:
            gate = make_gate(
                model,
                {
                    "name": "vit_tiny_patch16_224",
                    "image_size": 32,
                    "kwargs": {"patch_size": 4, "embed_dim": 96, "num_heads": 3},
                },
                1,
                0,
            ).to(device)
            objective = IEUObjective(
                gate,
                view_maker(gate),
                IEUConfig(tau=0.5),
                0.5,
                data.num_classes,
                config.batch_size,
                config.clip,
                data.poisoned,
                torch.device(device),
            )
        else:
            objective = CrossEntropy(("clean", "corrupted"))
        sync()
        start = time.perf_counter()
        fit(model, data, objective, config, view_maker(model, config), name=name)
        sync()
        if record:
            out[name] = {"seconds": time.perf_counter() - start, "digest": digest(model)}

    small = ModelSpec("resnet10t", train.num_classes, {}, 32)
    vit = ModelSpec("vit_small_patch16_224", train.num_classes, {"drop_path_rate": 0.1}, 224)
    if smoke:
        vit = ModelSpec("vit_tiny_patch16_224", train.num_classes, {"patch_size": 8}, 32)
    warm = train.subset(
        range(min(256, len(train)))
    )  # CUDA context, cuDNN, Triton compilation: untimed
    for spec, ieu in ((small, False), (small, True), (vit, False)):
        run("warm-up", spec, warm, 1, ieu=ieu, record=False)
    run("resnet10t none (2 epochs)", small, train, 2)
    run("resnet10t IEU stage 2 (2 epochs)", small, train, 2, ieu=True)
    run(
        "ViT-S/16 224px none (1 epoch, 2048 images)",
        vit,
        train.subset(range(min(2048, len(train)))),
        1,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=MODES)
    parser.add_argument("--folder")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the script")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        print(json.dumps(worker(Path(args.folder), args.worker, args.device, args.smoke)))
        return

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, args.smoke)
        results: dict[str, list[dict]] = {mode: [] for mode in MODES}
        # set_deterministic chooses the cuBLAS workspace itself
        env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
        for _ in range(args.repeats):
            for mode in MODES:  # alternate, each in a fresh process
                done = subprocess.run(
                    [sys.executable, __file__, "--worker", mode, "--folder", tmp]
                    + ["--device", args.device]
                    + (["--smoke"] if args.smoke else []),
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"device {name}, torch {torch.__version__}, repeats {args.repeats}")
    print(
        "| configuration | free s | deterministic s | ratio | free runs equal | det. runs equal |"
    )
    print("|---|---|---|---|---|---|")
    for name in results["free"][0]:
        free = [r[name] for r in results["free"]]
        det = [r[name] for r in results["deterministic"]]
        f = statistics.median(r["seconds"] for r in free)
        d = statistics.median(r["seconds"] for r in det)
        same_free = len({r["digest"] for r in free}) == 1
        same_det = len({r["digest"] for r in det}) == 1
        print(f"| {name} | {f:.2f} | {d:.2f} | {d / f:.2f} | {same_free} | {same_det} |")


if __name__ == "__main__":
    main()
