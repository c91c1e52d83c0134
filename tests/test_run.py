"""The whole project through the `kedro` command line, in a scratch copy of the project."""

import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ieu_potion.data import ImageSet
from ieu_potion.reporting.figures import BUILT_IN as FIGURES
from ieu_potion.results import RESULT_COLUMNS
from tests.badinput import bad_input
from tests.data.test_cifar10 import make_cifar_folder

ROOT = Path(__file__).resolve().parents[1]
GTSRB = ROOT.parent / "shared" / "devdata" / "gtsrb"
ATTACKS = [
    "badnets_white",
    "badnets_pattern",
    "blended",
    "sig",
    "trojan_sq",
    "trojan_wm",
    "l0_inv",
    "l2_inv",
    "smooth",
    "wanet",
    "batt",
    "potion_badnet",
    "moving_trigger",
    "sinusoidal",
    "issba",
]


def scratch_project(where: Path) -> Path:
    """A copy of the project's settings and configuration at ``where``, no data."""
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, where / name)
    shutil.copytree(ROOT / "conf", where / "conf", ignore=shutil.ignore_patterns("local"))
    (where / "conf" / "local").mkdir()
    (where / "src").mkdir()
    return where


@pytest.fixture
def project(tmp_path):
    return scratch_project(tmp_path)


# Torch's CPU results depend on its thread count; runs compared byte for byte use one.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def kedro_env(extra=None) -> dict[str, str]:
    """This process's environment with Kedro's telemetry off, and ``extra`` over it."""
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", **(extra or {})}


def python_in(project, *args, env=None, input=None):
    """``python <args>`` started in ``project`` (telemetry off, ``env`` over this process's
    environment), its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=project,
        env=kedro_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=600,
    )


def kedro(project, *args, env=None):
    return python_in(project, "-m", "kedro", "run", *args, env=env)


def written(project, env=None):
    """The files a run wrote under ``data/`` (or ``data/<env>``, where a shipped environment
    writes), its folder lock and configuration record aside."""
    root = project / "data" / (env or "")
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name not in (".run.lock", ".run_config.json")
    )


def fresh_copy(project, where):
    """The project's settings and configuration at ``where``, without its data."""
    shutil.copytree(project, where, ignore=shutil.ignore_patterns("data"))
    return where


@pytest.mark.slow
def test_default_data_poisoning_run_and_a_repeat_of_one_attack(project, tmp_path_factory):
    """Every attack on the embedded default data (the all_attacks environment); then, in a
    fresh copy, a run whose attack
    list (read from the run's parameters) names one attack writes that attack alone, byte
    for byte as the whole run did."""
    # ISSBA's codec trains for 30 steps instead of 1200: this checks the wiring
    codec = "data_poisoning.stega_codec.steps=30"
    every = ["--env", "all_attacks", "--pipelines", "data_poisoning"]
    result = kedro(project, *every, "--params", codec)
    assert result.returncode == 0, result.stderr[-3000:]
    assert written(project) == [f"all_attacks/{f}" for f in written(project, "all_attacks")]
    files = written(project, "all_attacks")
    assert "02_intermediate/stega_codec/codec.safetensors" in files
    assert "03_primary/issba/seed_0/codec_report.json" in files
    for attack in ATTACKS:
        for name in ("poisoned_train.npz", "triggered_test.npz", "discovery_subsets.npz"):
            assert f"03_primary/{attack}/seed_0/{name}" in files
        assert f"08_reporting/{attack}/seed_0/attack_gallery.json" in files
    poisoned = ImageSet.load(
        project / "data/all_attacks/03_primary/blended/seed_0/poisoned_train.npz"
    )
    assert poisoned.poisoned.mean() == pytest.approx(0.1, abs=1e-3)
    assert poisoned.image_size == (32, 32)

    again = fresh_copy(project, tmp_path_factory.mktemp("again") / "p")
    only = "data_poisoning.attacks=[l0_inv]" + "".join(
        f",{p}.attacks=[]" for p in ("ieu_finetune", "baselines", "potion_unlearning")
    )
    result = kedro(again, *every, "--params", only)
    assert result.returncode == 0, result.stderr[-3000:]
    made = written(again, "all_attacks")
    assert {Path(f).parts[1] for f in made if f.startswith("03")} == {"l0_inv"}
    l0_inv = "data/all_attacks/03_primary/l0_inv/seed_0/poisoned_train.npz"
    assert (again / l0_inv).read_bytes() == (project / l0_inv).read_bytes()


@pytest.mark.slow
def test_cifar10_environment_on_a_small_folder(project, tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    make_cifar_folder(root, sizes=(400, 400), test=50)
    # the Potion paper's benchmark namespace alone: a nested override of data_poisoning
    # keeps the rest of base's block under an environment that has parameters files of its
    # own (ProjectConfigLoader), and the other pipelines' lists are emptied to match
    others = "".join(f",{p}.attacks=[]" for p in ("ieu_finetune", "baselines", "potion_unlearning"))
    params = f"cifar10_root={root},data_poisoning.attacks=[potion_badnet]{others}"
    result = kedro(project, "--env", "cifar10", "--pipelines", "data_poisoning", "--params", params)
    assert result.returncode == 0, result.stderr[-3000:]
    potion = ImageSet.load(
        project / "data/cifar10/03_primary/potion_badnet/seed_0/poisoned_train.npz"
    )
    assert potion.poisoned.sum() == 500 and len(potion) == 720
    assert (potion.labels[potion.poisoned] == 0).all()
    assert potion.class_names[0] == "airplane"
    # the environment's outputs stay in its own folder: a base run never reads them
    assert written(project) == [f"cifar10/{f}" for f in written(project, "cifar10")]


TINY_CATALOG = """
source_images:
  type: ieu_potion.adapters.datasets.DigitsDataset
  image_size: 16
  copies: 1
  test_copies: 1
  min_contrast: 100
"""

TINY_PARAMETERS = """
dataset_name: tiny_digits
data_split: {pretrain_fraction: 0.4, seed: 0}
data_poisoning:
  attacks: [badnets_white]
  discovery: {shares: [0.5, 1.0], seed: 0}
  gallery_examples: 2
ieu_finetune: {attacks: [badnets_white]}
baselines:
  attacks: [badnets_white]
  methods: [none, abl, ibau, attnblock]
  trusted: {fraction: 0.1, seed: 0}
  abl: {isolation_epochs: 1, unlearning_epochs: 1}
  ibau: {rounds: 1}
badnets_white:
  attack: {name: badnets_white, target_class: 1, rate: 0.1, seed: 0}
  finetune: {lr: 2.0e-3, views: [clean]}   # its own regime over the finetune block
model:
  robust: {name: resnet10t, kwargs: {}, image_size: 16}
  gate:
    name: vit_tiny_patch16_224
    kwargs: {patch_size: 4, embed_dim: 24, num_heads: 2}
    image_size: 16
  weights: {source: pretrain, path: null}
  pretrain:
    views: [plain]
    train: {epochs: 1, batch_size: 64, lr: 1.0e-3}
finetune: {epochs: 2, batch_size: 64, lr: 1.0e-3, augment: {flip_p: 0.0}}
ieu:
  defence: {tau: 0.5, gate_depth: 1, queue_capacity: 16, unlearning_rate: dynamic}
  gate_training: {epochs: 2, batch_size: 64, lr: 2.0e-3, schedule: constant}
potion_unlearning: {attacks: [badnets_white]}
potion:
  discovery: benchmark
  shares: [share_0.5, one_shot]
  methods: [none, eu, ssd, ssd_ptn, lf_ptn, xlf_ptn]
  ssd_alphas: [10]
  eu_shares: [share_0.5]
  tradeoff_shares: [share_0.5]
  # the tiny models stay near chance, so PTN's searches give up: 4 steps test that path
  ptn: {rho: 0.1, max_steps: 4, parallel: 4}
"""


def with_tiny_env(project: Path) -> Path:
    (project / "conf" / "tiny").mkdir()
    (project / "conf" / "tiny" / "catalog.yml").write_text(TINY_CATALOG)
    (project / "conf" / "tiny" / "parameters.yml").write_text(TINY_PARAMETERS)
    return project


@pytest.fixture
def tiny_project(project):
    return with_tiny_env(project)


# The whole tiny run is shared by the end-to-end tests that only read what it wrote (it
# is not modified; a test that runs more works in a fresh copy): once with the
# sequential runner (`tiny_run`, in conftest.py: the tutorials' tests use it too), once
# with the Dask runner and two seeds.


@pytest.fixture(scope="session")
def tiny_dask_run(tmp_path_factory) -> Path:
    """The tiny environment with seeds 0 and 1, run by the Dask runner on a local cluster
    of two worker processes (one torch thread each): the namespaces of the two seeds side
    by side.  MLflow tracking is on for this run (off for ``tiny_run``)."""
    project = with_tiny_env(scratch_project(tmp_path_factory.mktemp("tiny_dask_run")))
    dask = ["--runner", "ieu_potion.runner.DaskRunner", "--runner-params", "n_workers=2"]
    tracked = {**ONE_THREAD, "IEU_POTION_MLFLOW": "1"}
    result = kedro(project, "--env", "tiny", "--params", "seeds=2", *dask, env=tracked)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DaskRunner: started a local cluster" in result.stdout + result.stderr
    return project


RUN = "data/07_model_output/badnets_white/seed_0"


def refusal(row, *args, says):
    """A `kedro run` command line that must fail before any work, its error saying each of
    ``says``; ``row`` is its ``bad_input`` mark (a row of docs/bad_input.md)."""
    return pytest.param(list(args), says, marks=row, id=args[-1])


# Each command runs in a fresh project with the tiny environment; all of them in one Python
# process (tests/kedro_runs.py), as start-up is most of each command's time.
REFUSALS = [
    refusal(
        bad_input(
            "`kedro run --env cifar10` with `cifar10_root` pointing nowhere",
            "refused before any work; names the catalog entry and the `cifar-10-batches-py` layout",
        ),
        *("--env", "cifar10", "--pipelines", "data_poisoning", "--params", "cifar10_root=absent"),
        says=["catalog entry 'source_images' (Cifar10Dataset) cannot load", "cifar-10-batches-py"],
    ),
    refusal(
        bad_input(
            "`--params badnets_white.attack.rate=1.5`",
            "refused before any work, naming the parameter; nothing written",
        ),
        *("--pipelines", "data_poisoning", "--params", "badnets_white.attack.rate=1.5"),
        says=["badnets_white.attack.rate: Input should be less than 1, got 1.5"],
    ),
    refusal(
        bad_input(
            "`--params blended.attack.name=blend`",
            "refused before any work, listing the valid attacks",
        ),
        *("--pipelines", "data_poisoning", "--params", "blended.attack.name=blend"),
        says=["blended.attack.name: unknown attack 'blend'; valid attacks: 'badnets_white'"],
    ),
    refusal(
        bad_input(
            "`--params baselines.methods=[ibu]`", "refused before any work, listing the defences"
        ),
        *("--env", "tiny", "--pipelines", "baselines", "--params", "baselines.methods=[ibu]"),
        says=["baselines.methods.0: Input should be 'none'", "'ibau'", "got 'ibu'"],
    ),
    refusal(
        bad_input(
            "`--params baselines.abl.gamma=-1`", "refused before any work, naming the parameter"
        ),
        *("--env", "tiny", "--pipelines", "baselines", "--params", "baselines.abl.gamma=-1"),
        says=["baselines.abl.gamma: Input should be greater than 0"],
    ),
    refusal(
        bad_input(
            "`--params ieu.defence.tau=1.5`", "refused before any work, naming the parameter"
        ),
        *("--env", "tiny", "--pipelines", "ieu_finetune", "--params", "ieu.defence.tau=1.5"),
        says=["ieu.defence.tau: Input should be 'auto' or less than 1, got 1.5"],
    ),
    refusal(
        bad_input(
            "`--params model.robust.name=resnet_tiny`",
            "refused before any work; suggests close timm names",
        ),
        *("--env", "tiny", "--pipelines", "baselines", "--params", "model.robust.name=resnet_tiny"),
        says=["unknown model 'resnet_tiny'"],
    ),
    refusal(
        bad_input(
            "`kedro run --env gtsrb` with `gtsrb_root` pointing nowhere",
            "refused before any work; names the catalog entry and the `train/<class>/...` layout",
        ),
        *("--env", "gtsrb", "--params", "gtsrb_root=absent"),
        says=[
            "catalog entry 'source_images' (ImageFolderDataset) cannot load",
            "`train/<class>/...` and `test/<class>/...`",
        ],
    ),
    refusal(
        bad_input(
            "`--params badnets_white.attack.target_class=10` on a source of 10 classes",
            "refused before any work, naming the parameter, the catalog entry and its classes",
        ),
        *("--env", "tiny", "--params", "badnets_white.attack.target_class=10"),
        says=[
            "badnets_white.attack.target_class: 10 is no class of 'source_images', which has "
            "10 (0 to 9)"
        ],
    ),
    refusal(
        bad_input(
            "`badnets_white.attack.count=5000` on a source of 1438 training images",
            "refused before any work, naming the parameter, the catalog entry and its size",
        ),
        "--env",
        "tiny",
        "--params",
        "badnets_white.attack.rate=null,badnets_white.attack.count=5000",
        says=[
            "badnets_white.attack.count: 5000 poisoned samples asked, but 'source_images' "
            "has 1438 training images"
        ],
    ),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict[tuple[str, ...], tuple[Path, dict]]:
    """Each refusal's command line (its arguments) run in its own fresh project: (project,
    result)."""
    projects = {
        tuple(case.values[0]): with_tiny_env(scratch_project(tmp_path_factory.mktemp("refused")))
        for case in REFUSALS
    }
    results = tmp_path_factory.mktemp("refusals") / "results.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kedro_runs.py"), str(results)],
        input=json.dumps([[str(project), list(args)] for args, project in projects.items()]),
        env=kedro_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(results.read_text())
    return {
        args: (project, outcome)
        for (args, project), outcome in zip(projects.items(), outcomes, strict=True)
    }


# A user's mistake is said in a few lines: Kedro's start-up log (wrapped at 80 columns, up
# to a dozen lines), the error and where to look; no traceback (cli.py).
MOST_LINES = 20


@pytest.mark.parametrize(("args", "says"), REFUSALS)
def test_a_bad_command_line_is_refused_before_any_work(refused, args, says):
    project, result = refused[tuple(args)]
    assert result["returncode"] != 0
    error = " ".join(result["output"].split())
    for message in says:
        assert message in error
    assert "Traceback" not in result["output"]
    assert len(result["output"].strip().splitlines()) <= MOST_LINES, result["output"]
    assert "docs/parameters.md" in error or "docs/data.md" in error
    assert written(project) == []


@pytest.mark.slow
def test_ieu_finetune_and_baselines_end_to_end(tiny_run, tmp_path_factory):
    import pandas as pd

    files = written(tiny_run)
    for name in (
        "06_models/backbone/model.safetensors",
        "06_models/backbone/spec.json",
        "06_models/badnets_white/seed_0/ieu_gate/model.safetensors",
        "06_models/badnets_white/seed_0/ieu/model.safetensors",
        "07_model_output/badnets_white/seed_0/ieu_history.csv",
        "07_model_output/badnets_white/seed_0/gate_confidence.npz",
        "07_model_output/badnets_white/seed_0/gate_epochs.npz",
        "07_model_output/badnets_white/seed_0/results_ieu.parquet",
    ):
        assert name in files
    history = pd.read_csv(tiny_run / RUN / "ieu_history.csv")
    assert len(history) == 2
    # the namespace's own regime: its lr (2e-3) is the peak after the warmup epoch, not
    # the finetune block's 1e-3
    assert history.lr.iloc[0] == pytest.approx(2.0e-3)
    assert_two_ranks_match(tiny_run, history, tmp_path_factory)
    assert {
        "gate_precision",
        "gate_recall",
        "gate_fpr",
        "samples_queued",
        "unlearning_steps",
        "last_unlearning_rate",
        "clean_accuracy",
        "attack_success_rate",
    } <= set(history)

    ieu = pd.read_parquet(tiny_run / RUN / "results_ieu.parquet")
    none = pd.read_parquet(tiny_run / RUN / "results_none.parquet")
    assert list(ieu.columns) == list(RESULT_COLUMNS)
    assert {"namespace", "attack", "seed", "fingerprint"} <= set(RESULT_COLUMNS)
    assert set(ieu.method) == {"ieu"} and set(none.method) == {"none"}
    assert set(ieu.dataset) == {"tiny_digits"} and set(ieu.namespace) == {"badnets_white"}
    for rows in (ieu, none):
        assert {"clean_accuracy", "attack_success_rate", "seconds"} <= set(rows.metric)
        assert rows.fingerprint.nunique() == 1 and not rows.duplicated(["metric"]).any()
    assert {"gate_precision", "gate_recall", "unlearning_steps"} <= set(ieu.metric)
    assert ieu.fingerprint[0] != none.fingerprint[0], "IEU's parameters are part of its key"
    assert_baselines(tiny_run, vit=False)


def assert_two_ranks_match(project, history, tmp_path_factory):
    """The ieu_finetune pipeline as two gloo ranks under torchrun: rank 0 writes each
    artifact once, IEU takes the same unlearning steps as in the one-process ``project``,
    and the losses stay within 1% (the ResNet's BatchNorm normalises each rank's half
    batch by its own statistics, the one difference from one process;
    tests/training/test_distributed.py checks the engine to 1e-5 on a model without
    BatchNorm)."""
    import pandas as pd

    ranks = fresh_copy(project, tmp_path_factory.mktemp("ranks") / "p")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "kedro", "run", "--env", "tiny"]
    command += ["--pipelines", "ieu_finetune", "--params", "distributed=true"]
    result = subprocess.run(
        command, cwd=ranks, env=kedro_env(ONE_THREAD), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = " ".join((result.stdout + result.stderr).split())
    assert "rank 1 of 2 joined the process" in log
    assert log.count("Completed 1 out of") == 1, "rank 1 logs warnings and errors only"
    assert set(written(ranks)) < set(written(project))
    two = pd.read_csv(ranks / RUN / "ieu_history.csv")
    assert two.unlearning_steps.tolist() == history.unlearning_steps.tolist()
    assert two.samples_queued.tolist() == history.samples_queued.tolist()
    for name in ("ieu_history.csv", "gate_history.csv"):
        one, two = (pd.read_csv(p / RUN / name).train_loss for p in (project, ranks))
        assert (abs(two - one) / one).max() < 0.01, name


def assert_baselines(project, vit: bool):
    """ABL, I-BAU and AttnBlock rows beside the undefended ones; AttnBlock applies to a ViT
    robust module only and says so otherwise."""
    import pandas as pd

    rows = {
        m: pd.read_parquet(project / RUN / f"results_{m}.parquet")
        for m in ("none", "abl", "ibau", "attnblock")
    }
    metrics = {m: dict(zip(r.metric, r.value, strict=True)) for m, r in rows.items()}
    for method in ("none", "abl", "ibau"):
        assert {"clean_accuracy", "attack_success_rate", "seconds", "peak_memory_mb"} <= set(
            metrics[method]
        ), method
    assert {"isolation_precision", "isolation_recall", "isolated"} <= set(metrics["abl"])
    assert {"perturbation_norm", "trusted_samples"} <= set(metrics["ibau"])
    assert metrics["ibau"]["trusted_samples"] > 0
    assert len({r.fingerprint[0] for r in rows.values()}) == 4, "each method its own key"
    assert metrics["attnblock"]["not_applicable"] == (0.0 if vit else 1.0)
    assert ("clean_accuracy" in metrics["attnblock"]) == vit
    history = pd.read_csv(project / RUN / "abl_history.csv")
    assert list(history.phase.unique()) == ["isolation", "finetune", "unlearning"]
    assert (project / "data/06_models/badnets_white/seed_0/ibau/model.safetensors").exists()
    assert not (project / "data/06_models/badnets_white/seed_0/attnblock").exists()


VIT_MODEL = """
model:
  robust:
    name: vit_tiny_patch16_224
    kwargs: {patch_size: 4, embed_dim: 24, depth: 2, num_heads: 2}
    image_size: 16
  gate: {name: vit_tiny_patch16_224, kwargs: {}, image_size: 16}
  weights: {source: pretrain, path: null}
  pretrain:
    views: [plain]
    train: {epochs: 1, batch_size: 64, lr: 1.0e-3}
"""


@pytest.mark.slow
def test_five_methods_on_a_vit_robust_module_reach_the_report(tiny_project):
    """With a ViT robust module every method applies: none, ABL, I-BAU, AttnBlock and IEU
    each get a row in the report's main table."""
    import pandas as pd

    tiny = tiny_project / "conf" / "tiny"
    text = (tiny / "parameters.yml").read_text()
    start, end = text.index("\nmodel:\n") + 1, text.index("\nfinetune:") + 1
    text = text[:start] + VIT_MODEL.lstrip() + text[end:]
    (tiny / "parameters.yml").write_text(
        text.replace(
            "potion_unlearning: {attacks: [badnets_white]}", "potion_unlearning: {attacks: []}"
        )
    )
    result = kedro(tiny_project, "--env", "tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_baselines(tiny_project, vit=True)
    table = pd.read_csv(tiny_project / "data/08_reporting/tables/main_table.csv")
    assert list(table.method) == ["none", "ieu", "abl", "attnblock", "ibau"]
    assert table.CA.notna().all() and table.ASR.notna().all()


# A `kedro run` whose validations are counted: every parameter tree the schema checks
# (Parameters) and every block a settings class reads from a mapping.
COUNTED_RUN = """
import collections, json, sys
from pathlib import Path
from kedro.framework.cli.cli import KedroCLI
from ieu_potion import config, schema

counts = collections.Counter()
adapter = config._adapter


class Counted:
    def __init__(self, kind):
        self.kind, self.inner = kind, adapter(kind)

    def validate_python(self, params):
        counts[self.kind.__name__] += 1
        return self.inner.validate_python(params)


config._adapter = Counted
whole = schema.Parameters.model_validate


def counted_tree(params, *args, **kwargs):
    counts["Parameters"] += 1
    return whole(params, *args, **kwargs)


schema.Parameters.model_validate = counted_tree
try:
    KedroCLI(Path.cwd()).main(args=["run", *sys.argv[2:]], prog_name="kedro")
except SystemExit as exc:
    assert not exc.code, exc.code
Path(sys.argv[1]).write_text(json.dumps(counts))
"""


@pytest.mark.slow
def test_each_parameter_block_is_validated_once_per_run(tiny_project, tmp_path):
    """Building the pipelines and the check before the run share one validation of the
    tree, and the nodes are handed its settings objects: no node validates a block again
    (IEU's pipeline with its upstream: the data, the backbone, the gate, stage 2)."""
    counts = tmp_path / "counts.json"
    run = ["--env", "tiny", "--pipelines", "ieu_finetune"]
    result = python_in(tiny_project, "-c", COUNTED_RUN, str(counts), *run, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "badnets_white.seed_0.defend_ieu" in result.stdout + result.stderr
    # (and tracking.yml's block, read once when the context is made: not a parameter; and
    # badnets_white's own regime, merged over the finetune block once when the tree is
    # checked: the nodes that train with it find that merge already made)
    assert json.loads(counts.read_text()) == {
        "Parameters": 1,
        "TrackingConfig": 1,
        "FinetuneConfig": 1,
    }


def test_every_pipeline_carries_its_upstream_so_it_runs_on_a_fresh_project(
    tiny_project, monkeypatch
):
    """`kedro run --pipelines <name>` on a fresh clone: each registered pipeline reads only
    the source images and parameters, everything else it makes itself."""
    from ieu_potion.adapters import config_loader
    from ieu_potion.pipeline_registry import register_pipelines

    monkeypatch.setattr(config_loader, "_active", None)
    config_loader.ProjectConfigLoader(
        conf_source=str(tiny_project / "conf"), env="tiny", base_env="base"
    )
    pipelines = register_pipelines()
    assert set(pipelines) > {"data_poisoning", "ieu_finetune", "baselines", "potion_unlearning"}
    for name, pipeline in pipelines.items():
        read = {i for i in pipeline.inputs() if not i.startswith("params:") and i != "parameters"}
        assert read == {"source_images"}, name


@pytest.mark.slow
def test_potion_unlearning_end_to_end(tiny_run):
    import pandas as pd

    potion = pd.read_parquet(tiny_run / RUN / "results_potion.parquet")
    assert set(potion.discovery_share) == {"share_0.5", "one_shot"}
    assert set(potion.method) == {"none", "eu", "ssd_alpha_10", "ssd_ptn", "lf_ptn", "xlf_ptn"}
    assert set(potion[potion.method == "eu"].discovery_share) == {"share_0.5"}
    for method in ("ssd_ptn", "lf_ptn", "xlf_ptn"):
        metrics = set(potion[potion.method == method].metric)
        assert {
            "poison_healed",
            "model_damage",
            "attack_success_rate",
            "clean_accuracy",
            "seconds",
            "alpha",
            "ptn_steps",
        } <= metrics
    trace = pd.read_csv(tiny_run / RUN / "potion_trace.csv")
    assert {"step", "s", "alpha", "forget_accuracy", "share", "method"} <= set(trace.columns)
    none_rows = potion[(potion.method == "none") & (potion.metric == "model_damage")]
    assert (none_rows.value == 0).all()


@pytest.mark.slow
def test_the_potion_paper_environment_end_to_end_shrunk(project):
    """The shipped potion_paper environment, shrunk (one digit copy, a narrow ResNet-9, one
    poison level, one epoch, one share): a model from random weights on the whole training set,
    the patch stamped after the augmentation, EU retraining from scratch, and the report's
    reproduction table beside the paper's values."""
    import pandas as pd

    from ieu_potion.data import ImageSet

    env = project / "conf" / "potion_paper"
    (env / "globals.yml").write_text(
        "data_root: data/potion_paper\nattacks: [paper_1]\npotion_attacks: [paper_1]\n"
        "defences: [none]\ndigit_copies: 1\n"
    )
    parameters = (env / "parameters.yml").read_text()
    narrow = parameters.replace("widths: [32, 64, 128, 64]", "widths: [8, 16, 16, 8]")
    assert narrow != parameters, "the environment's ResNet-9 widths moved"
    (env / "parameters.yml").write_text(narrow)
    shrink = (
        "finetune.epochs=1,potion.shares=[share_0.5],potion.ptn.max_steps=4,"
        "potion.ssd_alphas=[10],seeds=1,paper_1.attack.rate=0.05"
    )
    result = kedro(project, "--env", "potion_paper", "--params", shrink, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    log = " ".join((result.stdout + result.stderr).split())
    assert "stamped after the augmentation" in log
    assert "trusted_set" not in log, "no pretraining split, no I-BAU: no trusted set"
    data = project / "data" / "potion_paper"
    train = ImageSet.load(data / "03_primary/paper_1/seed_0/poisoned_train.npz")
    assert train.overlay is not None and len(train.overlay.originals) == train.poisoned.sum()
    assert len(ImageSet.load(data / "02_intermediate/pretrain_images.npz")) == 0
    reproduction = pd.read_csv(data / "08_reporting/tables/potion_reproduction.csv")
    xlf = reproduction.set_index("method").loc["xlf_ptn"]
    assert xlf["paper healed"] == pytest.approx(0.9372) and xlf["N (seeds)"] == 1
    assert reproduction.set_index("method").at["none", "undefended ASR per seed"].endswith("%")
    by_share = pd.read_csv(data / "08_reporting/tables/potion_by_share.csv")
    assert set(by_share.metric) == {"healed %", "damage pp"} and "xlf_ptn" in set(by_share.method)
    orderings = pd.read_csv(data / "08_reporting/tables/potion_orderings.csv")
    assert "xlf_ptn > ssd_ptn" in set(orderings["paper's ordering"])
    report = (data / "08_reporting/report.html").read_text()
    assert "Potion reproduction" in report and "orderings" in report


def test_realistic_potion_reads_the_gate_not_the_ground_truth(tiny_project):
    import numpy as np

    from ieu_potion.adapters.config_loader import ProjectConfigLoader
    from ieu_potion.pipelines.potion_unlearning import create_pipeline
    from ieu_potion.pipelines.potion_unlearning.nodes import realistic_subsets

    loader = ProjectConfigLoader(
        conf_source=str(tiny_project / "conf"),
        env="tiny",
        base_env="base",
        default_run_env="local",
        runtime_params={"potion": {"discovery": "realistic"}},
    )
    params = loader["parameters"]
    pipe = create_pipeline(params)
    assert "badnets_white.seed_0.gate_confidence" in pipe.inputs()
    assert not any(name.endswith("discovery_subsets") for name in pipe.all_inputs())
    # The gate's artifact carries the ground truth (for the report); discovery must not
    # read it: the same confidences with the truth flipped, or absent, flag the same.
    confidence = np.array([0.99, 0.2, 0.97, 0.5, 0.6])
    truth = {"confidence": confidence, "poisoned": np.array([1, 1, 0, 0, 0], bool)}
    tau = {"tau": np.array(0.9)}  # the threshold IEU's stage 2 used, stored beside them
    found = [
        realistic_subsets({**arrays, **tau})["ieu_gate"].tolist()
        for arrays in (truth, {**truth, "poisoned": ~truth["poisoned"]}, {"confidence": confidence})
    ]
    assert found == [[0, 2]] * 3
    assert realistic_subsets({**truth, "tau": np.array(0.98)})["ieu_gate"].tolist() == [0]


def gtsrb_slice(root: Path, classes: int = 6, train: int = 24, test: int = 8) -> Path:
    """A few frames per class of the first GTSRB classes, spread over each class's tracks."""
    if not GTSRB.is_dir():
        pytest.skip(f"the development copy of GTSRB is absent ({GTSRB})")
    for split, count in (("train", train), ("test", test)):
        for folder in sorted((GTSRB / split).iterdir())[:classes]:
            images = sorted(folder.iterdir())
            (root / split / folder.name).mkdir(parents=True)
            for image in images[:: max(1, len(images) // count)][:count]:
                shutil.copy(image, root / split / folder.name / image.name)
    return root


@pytest.mark.slow
def test_gtsrb_environment_end_to_end_on_a_slice_with_the_adaptive_gate(
    tiny_project, tmp_path_factory
):
    """The gtsrb environment's catalog and data set name on real photographs, every
    pipeline, with the tiny recipe (added as a further parameter file of that environment)
    and tau chosen from the data."""
    import numpy as np
    import pandas as pd

    root = gtsrb_slice(tmp_path_factory.mktemp("gtsrb"))
    recipe = TINY_PARAMETERS.replace("dataset_name: tiny_digits\n", "").replace(
        "defence: {tau: 0.5,", "defence: {tau: auto, gate_epoch: separation,"
    )
    (tiny_project / "conf" / "gtsrb" / "parameters_recipe.yml").write_text(recipe)
    result = kedro(tiny_project, "--env", "gtsrb", "--params", f"gtsrb_root={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = " ".join((result.stdout + result.stderr).split())
    assert "tau auto: " in log and "gate: kept epoch" in log
    out = tiny_project / "data" / "gtsrb"  # the environment's own data_root
    assert written(tiny_project) == [f"gtsrb/{f}" for f in written(tiny_project, "gtsrb")]
    results = pd.read_parquet(out / "08_reporting/tables/results_long.parquet")
    assert set(results.dataset) == {"gtsrb"}
    assert {"none", "ieu", "xlf_ptn", "eu"} <= set(results.method)
    poisoned = ImageSet.load(out / "03_primary/badnets_white/seed_0/poisoned_train.npz")
    assert poisoned.num_classes == 6 and poisoned.image_size == (32, 32)
    arrays = np.load(out / "07_model_output/badnets_white/seed_0/gate_confidence.npz")
    tau = float(arrays["tau"])
    ieu = results[results.method == "ieu"].set_index("metric").value
    assert 0 < tau <= 1 and ieu["gate_tau"] == pytest.approx(tau)
    history = pd.read_csv(out / "07_model_output/badnets_white/seed_0/gate_history.csv")
    assert history.kept.sum() == 1 and {"separation", "contrast", "gate_tau"} <= set(history)
    assert (out / "08_reporting/report.html").is_file()


def without_timing(table) -> str:
    """Result rows without their timing metrics, as CSV text."""
    from ieu_potion.results import TIMING_METRICS

    return table[~table.metric.isin(TIMING_METRICS)].to_csv(index=False)


def model_files(project) -> dict[str, bytes]:
    models = project / "data/06_models"
    return {str(p.relative_to(models)): p.read_bytes() for p in models.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_dask_run_repeats_the_sequential_run_byte_for_byte(tiny_run, tiny_dask_run):
    import pandas as pd

    one, two = (
        pd.read_csv(p / "data/08_reporting/tables/results_long.csv")
        for p in (tiny_run, tiny_dask_run)
    )
    assert set(two.seed) == {0, 1} and set(one.seed) == {0}
    assert without_timing(two[two.seed == 0]) == without_timing(one)
    sequential, dask = model_files(tiny_run), model_files(tiny_dask_run)
    assert len(sequential) == 12  # backbone, none, abl, ibau, IEU gate, IEU: weights, spec
    assert {name: dask[name] for name in sequential} == sequential
    assert set(dask) == set(sequential) | {n.replace("seed_0", "seed_1") for n in sequential}


def test_a_tracked_run_leaves_parameters_epochs_results_and_report_in_mlflow(
    tiny_run, tiny_dask_run
):
    """The Dask run was tracked (its workers' saves are logged when the run ends): one
    MLflow run with the parameters, a nested run per namespace and seed with every
    training's epochs and the results rows, the report and tables as artifacts.  The
    untracked run has no store."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    import pandas as pd
    from mlflow.tracking import MlflowClient

    assert not (tiny_run / "data" / "mlflow").exists(), "tracking is off by default"
    client = MlflowClient(f"sqlite:///{tiny_dask_run / 'data/mlflow/mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "ieu-potion"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.tags["env"] == "tiny"
    assert parent.data.params["seeds"] == "2"
    assert parent.data.params["badnets_white.attack.rate"] == "0.1"
    children = {r.data.tags["replicate"]: r for r in runs if r is not parent}
    assert {"badnets_white.seed_0", "badnets_white.seed_1"} <= set(children)
    seed_1 = children["badnets_white.seed_1"]
    assert seed_1.data.tags["mlflow.parentRunId"] == parent.info.run_id
    run_1 = tiny_dask_run / RUN.replace("seed_0", "seed_1")
    history = pd.read_csv(run_1 / "ieu_history.csv")
    logged = client.get_metric_history(seed_1.info.run_id, "ieu/train_loss")
    assert [(m.step, m.value) for m in logged] == list(
        zip(history.epoch, history.train_loss, strict=True)
    )
    rows = pd.read_parquet(run_1 / "results_ieu.parquet").set_index("metric").value
    assert seed_1.data.metrics["ieu/attack_success_rate"] == rows["attack_success_rate"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.html", "tables", "figures"} <= artifacts
    tables = {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert "tables/main_table.csv" in tables


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_results(tiny_run, tmp_path_factory):
    """IEU's pipeline killed in the middle of its stage 2 (after the first epoch), then
    resumed: the work done is kept and the results are those of an uninterrupted run."""
    import pandas as pd

    resumed = fresh_copy(tiny_run, tmp_path_factory.mktemp("resumed") / "p")
    ieu = ["--env", "tiny", "--pipelines", "ieu_finetune"]
    log = resumed / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "kedro", "run", *ieu],
            cwd=resumed,
            env=kedro_env(ONE_THREAD),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while "ieu epoch 1/2" not in log.read_text() and run.poll() is None:
            assert time.monotonic() < deadline, "the run never reached IEU's first epoch"
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (resumed / "data/06_models/badnets_white/seed_0/ieu").exists()
    # What a write killed half-way leaves behind.
    stray = resumed / "data/06_models/backbone/.model.safetensors.k1ll3d.tmp"
    stray.write_bytes(b"half a model")
    result = kedro(resumed, *ieu, "--only-missing-outputs", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Running node: backbone" not in result.stdout + result.stderr, "done work is kept"
    rows = [pd.read_parquet(p / RUN / "results_ieu.parquet") for p in (resumed, tiny_run)]
    assert without_timing(rows[0]) == without_timing(rows[1])
    models, uninterrupted = model_files(resumed), model_files(tiny_run)
    assert len(models) == 6  # backbone, IEU gate, IEU
    assert models == {name: uninterrupted[name] for name in models}
    assert list((resumed / "data").rglob("*.tmp")) == []


@pytest.mark.slow
def test_a_grid_run_one_seed_at_a_time_reports_what_one_run_of_all_seeds_does(
    tiny_run, tiny_dask_run, tmp_path_factory
):
    """docs/reproducibility.md, "A grid one seed at a time": seed 0 done (the sequential
    run), seed 1 added by a run of its own, then the report assembled over both seeds
    gives the results of the run that did both seeds at once."""
    import pandas as pd

    grid = fresh_copy(tiny_run, tmp_path_factory.mktemp("grid") / "p")
    shutil.copytree(tiny_run / "data", grid / "data")
    one_seed = ["--env", "tiny", "--params", "seeds=[1]", "--only-missing-outputs"]
    result = kedro(grid, *one_seed, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Running node: backbone" not in result.stdout + result.stderr, "seed 0's work is kept"
    both = ["--env", "tiny", "--params", "seeds=2", "--from-nodes", "collect_results"]
    result = kedro(grid, *both, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assembled, whole = (
        pd.read_csv(p / "data/08_reporting/tables/results_long.csv") for p in (grid, tiny_dask_run)
    )
    assert set(assembled.seed) == {0, 1}
    assert without_timing(assembled) == without_timing(whole)


PLOTS = "document.querySelectorAll('.js-plotly-plot')"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_full_run_writes_the_report_and_kedro_viz_shows_its_lineage(tiny_dask_run, browser):
    import pandas as pd

    reporting = tiny_dask_run / "data/08_reporting"
    for table in ("results_long", "main_table", "potion_table", "potion_by_share"):
        for suffix in ("csv", "parquet", "md"):
            assert (reporting / "tables" / f"{table}.{suffix}").is_file()
    main = pd.read_csv(reporting / "tables/main_table.csv", keep_default_na=False)
    assert list(main.columns) == [
        "namespace",
        "attack",
        "method",
        "N",
        "CA",
        "CA ±95%",
        "ASR",
        "ASR ±95%",
        "CA vs none",
        "ASR vs none",
        "note",
    ]
    assert main.method.tolist() == ["none", "ieu", "abl", "attnblock", "ibau"]
    assert main.N.tolist() == [2, 2, 2, 0, 2]
    assert main.note[3] == "not applicable to this robust module" and not main.note[0]
    assert main["CA vs none"][1] in ("overlap", "apart")
    potion = pd.read_csv(reporting / "tables/potion_table.csv")
    assert (potion["N (seeds)"] == 2).all() and (potion.shares == 1).all()
    configurations = json.loads((reporting / "tables/configurations.json").read_text())
    results = pd.read_csv(reporting / "tables/results_long.csv")
    assert set(results.fingerprint) == set(configurations)
    assert set(results.seed) == {0, 1}
    for name in FIGURES:
        assert (reporting / "figures" / f"{name}.json").is_file()
    trace = pd.read_csv(tiny_dask_run / RUN / "potion_trace.csv")
    scored = trace[trace.share == "share_0.5"]
    assert (
        scored.clean_accuracy.notna().all()
        and trace[trace.share != "share_0.5"].clean_accuracy.isna().all()
    )
    gate = pd.read_csv(tiny_dask_run / RUN / "gate_history.csv")
    assert {"gate_precision", "gate_recall"} <= set(gate.columns)

    # The report: 7 figures and the gallery, all drawn, offline, without script errors.
    log = browser.open((reporting / "report.html").as_uri(), f"{PLOTS}.length == 8")
    assert log.script_errors == []
    assert [u for u in log.requested if not u.startswith(("file:", "data:"))] == []
    drawn = browser.evaluate(
        f"[...{PLOTS}].map(p => p.querySelectorAll('.trace, .table, image').length)"
    )
    assert all(count > 0 for count in drawn), drawn
    readings = browser.evaluate(
        "[...document.querySelectorAll('p.reading')].map(p => p.textContent)"
    )
    assert len(readings) == 8 and all(len(text) > 30 for text in readings)

    # Kedro-Viz's static build of the same project, served locally.
    build = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "viz_build.py")],
        cwd=tiny_dask_run,
        env=kedro_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    handler = functools.partial(QuietHandler, directory=str(tiny_dask_run / "build"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        log = browser.open(url, "document.querySelectorAll('.pipeline-node').length > 20")
        layers = browser.evaluate("document.querySelectorAll('.pipeline-layer').length")
    finally:
        server.shutdown()
    assert log.script_errors == []
    # Requests may fail only where they leave this machine (web fonts; no internet here).
    assert [u for u, _ in log.failed_requests if u.startswith(url)] == []
    assert layers >= 5  # the catalog's data layers are drawn (no layer cycle)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["explore_poisoned_data", "results"])
def test_the_notebooks_run_on_a_finished_run(tiny_run, name, monkeypatch):
    """Each notebook, kept without outputs, runs from top to bottom on the tiny run's
    artifacts, reading them through the catalog."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "kept without outputs"
    monkeypatch.setenv("KEDRO_ENV", "tiny")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tiny_run}}
    )
    client.execute()  # a cell that raises fails the test
    shown = json.dumps([cell.outputs for cell in code])
    if name == "results":
        assert re.search(r"\d+ rows; \d+ methods; 1 seeds", shown) and "clean_accuracy" in shown
        assert shown.count("application/vnd.plotly.v1+json") == 2
    else:
        assert "training images" in shown


@pytest.mark.slow
@bad_input(
    "a second `kedro run` in a project whose data folder a live run is writing",
    "refused before any work, naming the first run's pid and command; the first ends well",
)
def test_a_second_run_in_a_busy_data_folder_is_refused_and_the_first_ends_well(tiny_project):
    """Two `kedro run`s in one project: the second is refused before any work, naming the
    first's pid and command; the first is not disturbed and leaves the folder unlocked."""
    from ieu_potion.io import LOCK_FILE, FolderLock

    lock = tiny_project / "data" / LOCK_FILE
    first = subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--env", "tiny", "--pipelines", "ieu_finetune"],
        cwd=tiny_project,
        env=kedro_env(ONE_THREAD),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while f'"pid": {first.pid},' not in (lock.read_text() if lock.exists() else ""):
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the first run never locked its data folder"
        time.sleep(0.1)
    second = kedro(tiny_project, "--env", "tiny", "--pipelines", "data_poisoning")
    assert first.poll() is None, "the first run ended before the second was refused"
    said = " ".join((second.stdout + second.stderr).split())
    assert second.returncode == 1 and "Traceback" not in said
    assert f"is in use by another run: pid {first.pid}" in said
    assert "kedro run --env tiny --pipelines ieu_finetune" in said
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output[-3000:]
    import pandas as pd

    rows = pd.read_parquet(tiny_project / RUN / "results_ieu.parquet")
    assert {"clean_accuracy", "attack_success_rate"} <= set(rows.metric)
    free = FolderLock(tiny_project / "data")
    free.acquire({"pid": os.getpid()})  # released: nothing holds it now
    free.release()


@pytest.mark.slow
def test_resuming_under_another_configuration_says_which_blocks_differ(tiny_project):
    """`--only-missing-outputs` reuses what the folder holds; where an earlier run of
    another configuration wrote it, the resumed run says which parameter blocks differ."""
    first = kedro(tiny_project, "--env", "tiny", "--pipelines", "data_poisoning", env=ONE_THREAD)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tiny_project / "data" / ".run_config.json").is_file()
    resumed = kedro(
        tiny_project,
        *("--env", "tiny", "--pipelines", "data_poisoning", "--only-missing-outputs"),
        *("--params", "data_split.seed=1"),
        env=ONE_THREAD,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = " ".join((resumed.stdout + resumed.stderr).split())
    assert "made by a run of another configuration (differing: data_split)" in said
