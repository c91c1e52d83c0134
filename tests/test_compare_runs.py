"""scripts/compare_runs.py pools two variants' runs over seeds and says where the
intervals part."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run_folder(tmp_path: Path, name: str, rows: list[tuple]) -> Path:
    folder = tmp_path / name
    tables = folder / "08_reporting" / "tables"
    tables.mkdir(parents=True)
    frame = pd.DataFrame(rows, columns=["namespace", "method", "seed", "metric", "value"])
    frame.insert(2, "discovery_share", "none")
    frame.to_csv(tables / "results_long.csv", index=False)
    return folder


def compare(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare_runs.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pools_seeds_across_runs_and_marks_separated_intervals(tmp_path):
    asr = [0.50, 0.52, 0.54]
    a0 = run_folder(tmp_path, "a0", [("ns", "ieu", 0, "attack_success_rate", asr[0])])
    a12 = run_folder(
        tmp_path,
        "a12",
        [("ns", "ieu", s, "attack_success_rate", asr[s]) for s in (1, 2)]
        + [("ns", "ieu", s, "seconds", 10.0 * s) for s in (1, 2)],
    )
    near = run_folder(
        tmp_path,
        "near",
        [("ns", "ieu", s, "attack_success_rate", v + 0.01) for s, v in enumerate(asr)],
    )
    far = run_folder(
        tmp_path,
        "far",
        [("ns", "ieu", s, "attack_success_rate", v + 0.3) for s, v in enumerate(asr)],
    )
    done = compare("--a", a0, a12, "--b", near)
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stdout and "seconds" not in done.stdout
    assert "1 overlap, 0 apart" in done.stdout
    done = compare("--a", a0, a12, "--b", far, "--markdown")
    assert done.returncode == 0, done.stderr
    assert "| ns | ieu |" in done.stdout and "+0.300" in done.stdout
    assert "0 overlap, 1 apart" in done.stdout


def test_a_seed_in_two_runs_of_one_variant_is_refused(tmp_path):
    one = run_folder(tmp_path, "one", [("ns", "none", 0, "clean_accuracy", 0.9)])
    again = run_folder(tmp_path, "again", [("ns", "none", 0, "clean_accuracy", 0.8)])
    done = compare("--a", one, again, "--b", one)
    assert done.returncode != 0 and "seed(s) [0]" in done.stderr
    done = compare("--a", one, "--b", tmp_path / "missing")
    assert done.returncode != 0 and "results_long.csv nor" in done.stderr


def test_an_unfinished_run_is_read_from_its_nodes_results(tmp_path):
    finished = run_folder(tmp_path, "finished", [("ns", "none", 0, "clean_accuracy", 0.9)])
    going = tmp_path / "going" / "07_model_output" / "ns" / "seed_0"
    going.mkdir(parents=True)
    row = {"namespace": "ns", "method": "none", "discovery_share": "none", "seed": 0}
    pd.DataFrame([{**row, "metric": "clean_accuracy", "value": 0.7}]).to_parquet(
        going / "results_none.parquet"
    )
    done = compare("--a", finished, "--b", tmp_path / "going")
    assert done.returncode == 0, done.stderr
    assert "-0.200" in done.stdout and "1/1" in done.stdout
