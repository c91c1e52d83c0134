"""The whole project through the `kedro` command line, in a scratch copy of the project."""

import os
import shutil
import subprocess
import sys
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


def test_missing_cifar_folder_names_the_catalog_entry(project, tmp_path):
    result = kedro(
        project,
        "--env",
        "cifar10",
        "--pipeline",
        "data_poisoning",
        "--params",
        f"cifar10_root={tmp_path / 'absent'}",
    )
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "catalog entry 'source_images' (Cifar10Dataset) cannot load" in message
    assert "cifar-10-batches-py" in message
    assert written(project) == []


def test_out_of_range_rate_is_rejected_before_any_work(project):
    result = kedro(
        project, "--pipeline", "data_poisoning", "--params", "badnets_white.attack.rate=1.5"
    )
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "parameter 'params:badnets_white.attack' is invalid" in message
    assert "rate must lie in (0, 1)" in message
    assert written(project) == []


def test_unknown_attack_name_lists_the_valid_ones(project):
    result = kedro(project, "--pipeline", "data_poisoning", "--params", "blended.attack.name=blend")
    assert result.returncode != 0
    assert "unknown attack 'blend'; valid attacks: badnets_white" in " ".join(result.stderr.split())
    assert written(project) == []


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
