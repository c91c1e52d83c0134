"""scripts/gate_sensitivity.py: its grid is checked before any work, a replay repeats the
run's own choice under the run's settings (and only then reports the run's CA and ASR),
and the summary takes intervals over seeds."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.defences.ieu import keep_gate_epoch
from ieu_potion.schema import validate_parameters

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "gate_sensitivity", ROOT / "scripts/gate_sensitivity.py"
)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def test_the_grid_is_parsed_and_out_of_range_values_refused():
    grid = script.parse_grid(
        ["min_separation=10,20", "min_contrast=0,2", "gate_epoch=last,consensus"]
    )
    assert grid == {
        "min_separation": [10.0, 20.0],
        "min_contrast": [0.0, 2.0],
        "gate_epoch": ["last", "consensus"],
    }
    with pytest.raises(
        SystemExit, match="SETTING one of .'min_separation', 'min_contrast', 'gate_epoch'."
    ):
        script.parse_grid(["tau=0.5"])
    with pytest.raises(Exception, match="min_separation"):
        script.parse_grid(["min_separation=-1"])
    with pytest.raises(Exception, match="min_contrast"):
        script.parse_grid(["min_contrast=-0.5"])
    with pytest.raises(Exception, match="gate_epoch"):
        script.parse_grid(["gate_epoch=best"])


class Saved(dict):
    """A finished run's datasets by name (what the Kedro catalog would load)."""

    def load(self, name):
        return self[name]


def finished_run(params):
    """Three gate epochs: none learnt, learnt, learnt; the run kept what its settings keep."""
    rng = np.random.default_rng(0)
    poisoned = np.arange(800) >= 700  # 100 poisoned: more than one batch

    def epoch(poison_at):
        z = rng.normal(-1.0, 0.5, 800)
        z[700:] = rng.normal(poison_at, 0.3, 100)
        return 1 / (1 + np.exp(-z))

    confidences = np.stack([epoch(-1.0), epoch(4.0), epoch(3.5)])
    least = params.finetune.batch_size
    kept = keep_gate_epoch(params.ieu.defence, confidences, least)
    tau = script.choose_tau(params.ieu.defence, confidences[kept.epoch - 1], least)[2]
    run = "badnets_white.seed_0"
    return Saved(
        {
            f"{run}.gate_epochs": {"confidence": confidences, "poisoned": poisoned},
            f"{run}.gate_history": pd.DataFrame(
                {"epoch": [1, 2, 3], "kept": [e == kept.epoch for e in (1, 2, 3)]}
            ),
            f"{run}.gate_confidence": {"tau": np.array(tau)},
            f"{run}.results_ieu": pd.DataFrame(
                {"metric": ["clean_accuracy", "attack_success_rate"], "value": [0.9, 0.02]}
            ),
        }
    )


def test_a_replay_under_the_runs_own_settings_repeats_its_choice():
    params = validate_parameters(project_config("base")[0])
    catalog = finished_run(params)
    grid = {"min_separation": [params.ieu.defence.min_separation, 1e6]}
    own, strict = script.replays(catalog, params, "badnets_white", 0, grid)
    assert own["same_as_run"] and own["epoch"] in (2, 3)
    assert own["gate_recall"] == 1.0 and own["gate_precision"] == 1.0
    assert (own["clean_accuracy"], own["attack_success_rate"]) == (0.9, 0.02)
    # no cut separates by 1e6: nothing flagged, the last epoch kept, IEU would differ
    assert strict["gate_flagged"] == 0 and strict["epoch"] == 3 and not strict["same_as_run"]
    assert np.isnan(strict["clean_accuracy"])
    table = script.summary(pd.DataFrame([own, strict]))
    assert list(table["IEU CA %"]) == ["90.0", "rerun"]
    assert list(table["flagged nothing"]) == [0, 1] and table["recall %"].iloc[1] == "-"


def test_the_summary_gives_intervals_over_seeds():
    rows = pd.DataFrame(
        [
            {
                "namespace": "ns",
                "seed": seed,
                "setting": "min_separation",
                "value": 20.0,
                "epoch": 3 + seed,
                "gate_flagged": 100 + 10 * seed,
                "gate_precision": 0.9,
                "gate_recall": 0.8 + 0.05 * seed,
                "same_as_run": True,
                "clean_accuracy": 0.9,
                "attack_success_rate": 0.01 * seed,
            }
            for seed in range(3)
        ]
    )
    row = script.summary(rows).iloc[0]
    assert row["N (seeds)"] == 3 and row["epochs kept"] == "3, 4, 5"
    assert row["flagged"].startswith("110.0 ± ") and row["recall %"].startswith("85.0 ± ")
    assert row["precision %"] == "90.0 ± 0.0" and row["IEU ASR %"].startswith("1.0 ± ")
