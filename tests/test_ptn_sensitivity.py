"""scripts/ptn_sensitivity.py: its grid is checked before any work, and its summary
averages the shares per seed and takes intervals over seeds only."""

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "ptn_sensitivity", ROOT / "scripts/ptn_sensitivity.py"
)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def test_the_grid_is_parsed_and_out_of_range_values_refused():
    grid = script.parse_grid(["min_percentile=90,95", "max_dampened=0.05"])
    assert grid == {"min_percentile": [90.0, 95.0], "max_dampened": [0.05]}
    with pytest.raises(SystemExit, match="SETTING=V1,V2"):
        script.parse_grid(["percentile=90"])
    with pytest.raises(Exception, match="min_percentile"):
        script.parse_grid(["min_percentile=100"])
    with pytest.raises(SystemExit, match="--fix"):
        script.parse_grid(["rho"], "--fix")


def test_the_summary_averages_shares_per_seed_and_counts_searches_given_up():
    rows = pd.DataFrame(
        [
            (
                "ns",
                seed,
                share,
                "xlf",
                "rho",
                0.1,
                healed + seed / 10,
                -1.0,
                share == "one_shot",
                "max_dampened" if seed else "min_percentile",
            )
            for seed in range(3)
            for share, healed in (("share_0.1", 0.5), ("share_1", 0.7), ("one_shot", 0.2))
        ],
        columns=[
            "namespace",
            "seed",
            "share",
            "kind",
            "setting",
            "value",
            "healed",
            "damage",
            "gave_up",
            "stop",
        ],
    )
    (row,) = script.summary(rows).to_dict("records")
    assert row["value"] == "0.1" and row["N (seeds)"] == 3
    assert row["gave up"] == "3 of 9 (max_dampened 2, min_percentile 1)"
    # per seed 0.6, 0.7, 0.8: mean 70%, t(0.975, 2) * 0.1 / sqrt(3) = 24.8 points
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert row["healed %"] == f"70.0 ± {100 * half:.1f}"
    assert row["damage pp"] == "-1.0 ± 0.0"
