"""The whole project through the `kedro` command line, in a scratch copy of the project."""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ieu_potion.data import ImageSet
from tests.data.test_cifar10 import make_cifar_folder

ROOT = Path(__file__).resolve().parents[1]
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
]


@pytest.fixture
def project(tmp_path):
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()
    return tmp_path


def kedro(project, *args):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kedro", "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def written(project):
    return sorted(
        str(p.relative_to(project / "data")) for p in (project / "data").rglob("*") if p.is_file()
    )


@pytest.mark.slow
def test_default_data_poisoning_run(project):
    result = kedro(project, "--pipeline", "data_poisoning")
    assert result.returncode == 0, result.stderr[-3000:]
    files = written(project)
    for attack in ATTACKS:
        for name in ("poisoned_train.npz", "triggered_test.npz", "discovery_subsets.npz"):
            assert f"03_primary/{attack}/{name}" in files
        assert f"08_reporting/{attack}/attack_gallery.json" in files
    poisoned = ImageSet.load(project / "data/03_primary/blended/poisoned_train.npz")
    assert poisoned.poisoned.mean() == pytest.approx(0.1, abs=1e-3)
    assert poisoned.image_size == (32, 32)


@pytest.mark.slow
def test_cifar10_environment_on_a_small_folder(project, tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    make_cifar_folder(root, sizes=(400, 400), test=50)
    result = kedro(
        project,
        "--env",
        "cifar10",
        "--pipeline",
        "data_poisoning",
        "--params",
        f"cifar10_root={root}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    potion = ImageSet.load(project / "data/03_primary/potion_badnet/poisoned_train.npz")
    assert potion.poisoned.sum() == 500 and len(potion) == 720
    assert (potion.labels[potion.poisoned] == 0).all()
    assert potion.class_names[0] == "airplane"


def assert_rejected_before_any_work(project, args, *messages):
    """The run fails, its error says each of ``messages``, and no artifact was written."""
    result = kedro(project, *args)
    assert result.returncode != 0
    error = " ".join(result.stderr.split())
    for message in messages:
        assert message in error
    assert written(project) == []


def test_missing_cifar_folder_names_the_catalog_entry(project, tmp_path):
    args = [
        "--env",
        "cifar10",
        "--pipeline",
        "data_poisoning",
        "--params",
        f"cifar10_root={tmp_path / 'absent'}",
    ]
    assert_rejected_before_any_work(
        project,
        args,
        "catalog entry 'source_images' (Cifar10Dataset) cannot load",
        "cifar-10-batches-py",
    )


def test_out_of_range_rate_is_rejected_before_any_work(project):
    args = ["--pipeline", "data_poisoning", "--params", "badnets_white.attack.rate=1.5"]
    assert_rejected_before_any_work(
        project,
        args,
        "parameter 'params:badnets_white.attack' is invalid",
        "rate must lie in (0, 1)",
    )


def test_unknown_attack_name_lists_the_valid_ones(project):
    args = ["--pipeline", "data_poisoning", "--params", "blended.attack.name=blend"]
    assert_rejected_before_any_work(
        project, args, "unknown attack 'blend'; valid attacks: badnets_white"
    )


def test_attack_list_is_read_from_the_run_parameters_and_runs_repeat_exactly(project):
    outputs = []
    for _ in range(2):
        result = kedro(
            project, "--pipeline", "data_poisoning", "--params", "data_poisoning.attacks=[l0_inv]"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert {Path(f).parts[1] for f in written(project) if f.startswith("03")} == {"l0_inv"}
        outputs.append((project / "data/03_primary/l0_inv/poisoned_train.npz").read_bytes())
    assert outputs[0] == outputs[1]


TINY_CATALOG = """
source_images:
  type: ieu_potion.data.datasets.DigitsDataset
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
baselines: {attacks: [badnets_white]}
badnets_white:
  attack: {name: badnets_white, target_class: 1, rate: 0.1, seed: 0}
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
  ptn: {rho: 0.1, max_steps: 40, parallel: 4}
"""


@pytest.fixture
def tiny_project(project):
    (project / "conf" / "tiny").mkdir()
    (project / "conf" / "tiny" / "catalog.yml").write_text(TINY_CATALOG)
    (project / "conf" / "tiny" / "parameters.yml").write_text(TINY_PARAMETERS)
    return project


@pytest.mark.slow
def test_ieu_finetune_and_baselines_end_to_end(tiny_project):
    import pandas as pd

    result = kedro(tiny_project, "--env", "tiny", "--pipeline", "ieu_finetune")
    assert result.returncode == 0, result.stderr[-3000:]
    files = written(tiny_project)
    for name in (
        "06_models/backbone/model.safetensors",
        "06_models/backbone/spec.json",
        "06_models/badnets_white/ieu_gate/model.safetensors",
        "06_models/badnets_white/ieu/model.safetensors",
        "07_model_output/badnets_white/ieu_history.csv",
        "07_model_output/badnets_white/gate_confidence.npz",
        "08_reporting/results.csv",
        "08_reporting/results.parquet",
    ):
        assert name in files
    history = pd.read_csv(tiny_project / "data/07_model_output/badnets_white/ieu_history.csv")
    assert len(history) == 2
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

    result = kedro(tiny_project, "--env", "tiny", "--pipeline", "baselines")
    assert result.returncode == 0, result.stderr[-3000:]
    results = pd.read_parquet(tiny_project / "data/08_reporting/results.parquet")
    assert list(results.columns) == [
        "dataset",
        "attack",
        "method",
        "discovery_share",
        "seed",
        "metric",
        "value",
    ]
    assert set(results.method) == {"ieu", "none"} and set(results.dataset) == {"tiny_digits"}
    for method in ("ieu", "none"):
        metrics = set(results[results.method == method].metric)
        assert {"clean_accuracy", "attack_success_rate", "seconds"} <= metrics
    assert {"gate_precision", "gate_recall", "unlearning_steps"} <= set(
        results[results.method == "ieu"].metric
    )
    assert not results.duplicated(["attack", "method", "metric"]).any()


def test_bad_ieu_threshold_is_rejected_before_any_work(tiny_project):
    args = ["--env", "tiny", "--pipeline", "ieu_finetune", "--params", "ieu.defence.tau=1.5"]
    assert_rejected_before_any_work(tiny_project, args, "tau must lie in (0, 1)")


def test_unknown_model_name_is_rejected_before_any_work(tiny_project):
    args = ["--env", "tiny", "--pipeline", "baselines", "--params", "model.robust.name=resnet_tiny"]
    assert_rejected_before_any_work(tiny_project, args, "unknown model 'resnet_tiny'")


@pytest.mark.slow
def test_potion_unlearning_end_to_end_on_a_fresh_project(tiny_project):
    import pandas as pd

    result = kedro(tiny_project, "--env", "tiny", "--pipeline", "potion_unlearning")
    assert result.returncode == 0, result.stderr[-3000:]
    results = pd.read_csv(tiny_project / "data/08_reporting/results.csv")
    potion = results[results.discovery_share != "none"]
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
    trace = pd.read_csv(tiny_project / "data/07_model_output/badnets_white/potion_trace.csv")
    assert {"step", "s", "alpha", "forget_accuracy", "share", "method"} <= set(trace.columns)
    none_rows = potion[(potion.method == "none") & (potion.metric == "model_damage")]
    assert (none_rows.value == 0).all()


def test_realistic_potion_reads_the_gate_not_the_ground_truth(tiny_project):
    from ieu_potion.config import ProjectConfigLoader
    from ieu_potion.pipelines.potion_unlearning import create_pipeline

    loader = ProjectConfigLoader(
        conf_source=str(tiny_project / "conf"),
        env="tiny",
        base_env="base",
        default_run_env="local",
        runtime_params={"potion": {"discovery": "realistic"}},
    )
    pipe = create_pipeline(loader["parameters"])
    assert "badnets_white.gate_confidence" in pipe.inputs()
    assert "badnets_white.discovery_subsets" not in pipe.all_inputs()


REPORT_FIGURES = [
    "ca_asr",
    "gate_confidence_cdf",
    "gate_history",
    "healed_vs_share",
    "healed_vs_damage",
    "ptn_tradeoff",
    "timing",
]
PLOTS = "document.querySelectorAll('.js-plotly-plot')"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_full_run_writes_the_report_and_kedro_viz_shows_its_lineage(tiny_project, browser):
    import pandas as pd

    result = kedro(tiny_project, "--env", "tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    reporting = tiny_project / "data/08_reporting"
    for table in ("results_long", "summary_ca_asr", "potion_table"):
        for suffix in ("csv", "parquet", "md"):
            assert (reporting / "tables" / f"{table}.{suffix}").is_file()
    summary = pd.read_csv(reporting / "tables/summary_ca_asr.csv")
    assert list(summary.columns) == ["attack", "none CA", "none ASR", "ieu CA", "ieu ASR", "seeds"]
    for name in REPORT_FIGURES:
        assert (reporting / "figures" / f"{name}.json").is_file()
    trace = pd.read_csv(tiny_project / "data/07_model_output/badnets_white/potion_trace.csv")
    scored = trace[trace.share == "share_0.5"]
    assert (
        scored.clean_accuracy.notna().all()
        and trace[trace.share != "share_0.5"].clean_accuracy.isna().all()
    )
    gate = pd.read_csv(tiny_project / "data/07_model_output/badnets_white/gate_history.csv")
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
        cwd=tiny_project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    handler = functools.partial(QuietHandler, directory=str(tiny_project / "build"))
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
