import math

import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from ieu_potion.adapters.datasets import (
    ModelDataset,
    ResultsArchiveDataset,
    ResultsDataset,
    TableDataset,
)
from ieu_potion.models import ModelSpec, build_model
from ieu_potion.reporting.stats import aggregate
from ieu_potion.reporting.tables import (
    current_rows,
    ieu_orderings,
    ieu_reproduction,
    main_table,
    orderings,
    potion_table,
    published_ieu,
    published_potion,
    reproduction_table,
    share_table,
)
from ieu_potion.results import RESULT_COLUMNS, RunKey, replicate_name, split_replicate


def key(seed=0, fingerprint="aaa", namespace="blend_a"):
    return RunKey("d", namespace, "blended", seed, fingerprint)


def test_results_dataset_round_trips_one_nodes_rows_and_refuses_other_columns(tmp_path):
    dataset = ResultsDataset(filepath=str(tmp_path / "ns/seed_0/results_none.parquet"))
    rows = key().rows("none", {"clean_accuracy": 0.8, "seconds": 3, "skip": "text"})
    dataset.save(rows)
    loaded = dataset.load()
    assert list(loaded.columns) == list(RESULT_COLUMNS)
    assert loaded.value.tolist() == [0.8, 3.0] and set(loaded.namespace) == {"blend_a"}
    with pytest.raises(DatasetError, match="lack columns"):
        dataset.save(rows.drop(columns=["fingerprint"]))


def test_archive_replaces_rows_of_the_same_key_and_keeps_other_configurations(tmp_path):
    archive = ResultsArchiveDataset(filepath=str(tmp_path / "results.csv"))
    assert list(archive.load().columns) == list(RESULT_COLUMNS)
    archive.save(key().rows("none", {"clean_accuracy": 0.8}))
    archive.save(key(fingerprint="bbb").rows("none", {"clean_accuracy": 0.7}))
    archive.save(key().rows("none", {"clean_accuracy": 0.85}))
    loaded = archive.load().set_index("fingerprint")
    assert loaded.value.to_dict() == {"aaa": 0.85, "bbb": 0.7}
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 2


def test_two_variants_of_one_attack_stay_apart():
    rows = pd.concat(
        [
            key(namespace="blend_a").rows("none", {"clean_accuracy": 0.8}),
            key(namespace="blend_b").rows("none", {"clean_accuracy": 0.6}),
        ]
    )
    table = main_table(current_rows([rows], ["aaa"]))
    assert table.set_index("namespace").CA.to_dict() == {"blend_a": 80.0, "blend_b": 60.0}
    assert set(table.attack) == {"blended"}


def test_rows_of_another_configuration_never_reach_the_current_tables(caplog):
    fresh = key(fingerprint="new").rows("none", {"clean_accuracy": 0.9})
    stale = key(seed=1, fingerprint="old").rows("none", {"clean_accuracy": 0.1})
    rows = current_rows([fresh, stale], ["new", "new"])
    assert rows.value.tolist() == [0.9]
    assert "1 results rows of another configuration (fingerprint old, now new)" in caplog.text


def test_main_table_gives_t_intervals_and_marks_overlapping_differences():
    values = {
        "none": ([0.84, 0.85, 0.83], [0.93, 0.92, 0.94]),
        "ieu": ([0.87, 0.88, 0.86], [0.02, 0.01, 0.03]),
    }
    rows = pd.concat(
        key(seed).rows(m, {"clean_accuracy": ca[seed], "attack_success_rate": asr[seed]})
        for m, (ca, asr) in values.items()
        for seed in range(3)
    )
    table = main_table(rows).set_index("method")
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1 point
    assert table.at["ieu", "CA"] == pytest.approx(87.0)
    assert table.at["ieu", "CA ±95%"] == pytest.approx(half, rel=1e-5)
    assert table.at["ieu", "N"] == 3
    assert table.at["ieu", "CA vs none"] == "overlap"  # 87 - 84 < 2 * 2.48
    assert table.at["ieu", "ASR vs none"] == "apart"
    assert table.at["none", "CA vs none"] == ""
    assert list(table.index) == ["none", "ieu"]


def potion_rows():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        for share, healed, damage in (
            ("share_0.1", 0.6, -1.0),
            ("share_1", 0.8, -3.0),
            ("one_shot", 0.2, 0.0),
            ("ieu_gate", 0.5, -0.5),
        ):
            metrics = {"poison_healed": healed + shift, "model_damage": damage}
            gave_up = share == "one_shot" or (share == "share_1" and seed == 1)
            metrics["ptn_converged"] = 0.0 if gave_up else 1.0
            rows.append(key(seed).rows("xlf_ptn", metrics, share))
    rows.append(key().rows("none", {"clean_accuracy": 0.9}))
    return pd.concat(rows)


def test_a_value_that_is_not_finite_is_counted_and_said_not_dropped_silently():
    rows = pd.concat(
        key(seed).rows(m, {"clean_accuracy": ca, "attack_success_rate": 0.5})
        for seed, ca in enumerate([0.8, math.nan, 0.9])
        for m in ("none", "ibau")
    )
    table = main_table(rows).set_index("method")
    assert table.at["ibau", "N"] == 2
    assert table.at["ibau", "note"] == "1 seed without a finite value, left out of N"
    stats = aggregate(pd.DataFrame({"g": ["a"] * 3, "v": [1.0, math.inf, 2.0]}), ["g"], ["v"])
    assert (stats.v_n[0], stats.v_left_out[0], stats.v[0]) == (2, 1, 1.5)


def test_potion_table_averages_shares_per_seed_and_keeps_one_shot_and_realistic_apart():
    table = potion_table(potion_rows()).set_index("method")
    # per seed over the shares: 0.7 and 0.8 -> mean 0.75 over N = 2 seeds, s = 0.0707
    assert table.at["xlf_ptn", "healed"] == pytest.approx(0.75)
    assert table.at["xlf_ptn", "healed ±95%"] == pytest.approx(
        12.7062 * 0.0707107 / math.sqrt(2), rel=1e-4
    )
    assert table.at["xlf_ptn", "damage"] == pytest.approx(-2.0)
    assert (table.at["xlf_ptn", "N (seeds)"], table.at["xlf_ptn", "shares"]) == (2, 2)
    assert table.at["xlf_ptn", "one-shot healed"] == pytest.approx(0.25)
    assert table.at["xlf_ptn", "realistic healed"] == pytest.approx(0.55), "realistic is apart"
    assert "none" not in table.index, "rows without a discovery share are not Potion results"
    # searches that stopped at a bound, over every share: both one-shot, one share_1
    assert (table.at["xlf_ptn", "PTN gave up"], table.at["xlf_ptn", "PTN searches"]) == (3, 8)


def test_the_reproduction_table_sets_the_papers_values_beside_ours():
    table = reproduction_table(potion_rows(), published_potion()).set_index("method")
    assert table.at["xlf_ptn", "paper healed"] == pytest.approx(0.9372)
    assert table.at["xlf_ptn", "paper damage"] == pytest.approx(-1.41)
    assert table.at["xlf_ptn", "paper one-shot healed"] == pytest.approx(0.6801)
    published = published_potion()
    assert set(published.method) == {"none", "eu", "ssd", "ssd_ptn", "lf_ptn", "xlf_ptn"}
    assert published.source.str.contains("Potion").all()


def test_orderings_hold_only_where_the_intervals_over_seeds_are_apart():
    def rows(method, healed, damage):
        return [
            key(seed).rows(method, {"poison_healed": h, "model_damage": d}, share)
            for seed, (h, d) in enumerate(zip(healed, damage, strict=True))
            for share in ("share_0.1", "share_1")
        ]

    frame = pd.concat(
        rows("xlf_ptn", [0.90, 0.92, 0.91], [-1.0, -1.2, -0.8])
        + rows("ssd_ptn", [0.60, 0.62, 0.61], [-5.0, -6.0, -4.0])
        + rows("eu", [0.55, 0.70, 0.65], [0.0, 0.1, -0.1])
        + rows("none", [0.70, 0.71, 0.69], [0.0, 0.0, 0.0])
    )
    verdicts = orderings(frame).set_index("paper's ordering").verdict.to_dict()
    assert verdicts == {
        "xlf_ptn > ssd_ptn": "holds",
        "ssd_ptn > eu": "not resolved",
        "eu > none": "not resolved",
        "xlf_ptn ≥ ssd_ptn": "holds",
        "xlf_ptn ≥ ssd": "not run",
    }
    flipped = frame.assign(
        method=frame.method.map({"xlf_ptn": "ssd_ptn", "ssd_ptn": "xlf_ptn"}).fillna(frame.method)
    )
    assert orderings(flipped).verdict.iloc[0] == "reversed"


def ieu_rows():
    """Two attacks over three seeds: blend_a learnt by the undefended model, blend_b not;
    IEU beats I-BAU on ASR everywhere, ABL (oracle) only on average, and at seed 2 ABL
    has no row for blend_a."""
    per_seed = {  # method: namespace -> [(CA, ASR)] per seed
        "none": {
            "blend_a": [(0.80, 0.95), (0.82, 0.97), (0.81, 0.96)],
            "blend_b": [(0.8, 0.3)] * 3,
        },
        "ieu": {"blend_a": [(0.85, 0.01), (0.84, 0.02), (0.86, 0.01)], "blend_b": [(0.8, 0.1)] * 3},
        "ibau": {
            "blend_a": [(0.70, 0.40), (0.72, 0.30), (0.71, 0.35)],
            "blend_b": [(0.7, 0.1)] * 3,
        },
        "abl_oracle": {"blend_a": [(0.80, 0.05), (0.70, 0.60)], "blend_b": [(0.8, 0.2)] * 3},
    }
    return pd.concat(
        key(seed, namespace=namespace).rows(
            method, {"clean_accuracy": ca, "attack_success_rate": asr}
        )
        for method, namespaces in per_seed.items()
        for namespace, values in namespaces.items()
        for seed, (ca, asr) in enumerate(values)
    )


def test_the_ieu_comparison_averages_learnt_attacks_over_seeds_beside_the_paper():
    table = ieu_reproduction(ieu_rows(), published_ieu()).set_index("method")
    assert list(table.index) == ["none", "ieu", "abl_oracle", "ibau"]
    assert (table.attacks == 1).all() and (table["not learnt"] == "blend_b (30.0%)").all()
    assert table.at["ieu", "N (seeds)"] == 3 and table.at["ieu", "ASR"] == pytest.approx(4 / 3)
    assert table.at["ieu", "CA ±95%"] > 0
    # the seed at which ABL misses an attack has no average: N 2, one left out
    assert (table.at["abl_oracle", "N (seeds)"], table.at["abl_oracle", "left out"]) == (2, 1)
    # a non-finite ASR for a learnt attack is not averaged over fewer attacks: that seed's
    # ASR average is left out and counted
    # (blend_b made learnt, so that two attacks are averaged)
    rows = ieu_rows()
    asr = rows.metric == "attack_success_rate"
    rows.loc[(rows.method == "none") & (rows.namespace == "blend_b") & asr, "value"] = 0.9
    rows.loc[
        (rows.method == "ieu") & (rows.seed == 2) & (rows.namespace == "blend_a") & asr, "value"
    ] = math.nan
    partial = ieu_reproduction(rows, published_ieu()).set_index("method")
    assert partial.at["ieu", "attacks"] == 2 and partial.at["ieu", "left out"] == 1
    assert partial.at["ieu", "ASR"] == pytest.approx(100 * (0.055 + 0.06) / 2)
    assert partial.at["ieu", "N (seeds)"] == 3, "CA is complete at every seed"
    assert table.at["ieu", "paper cifar10 ASR"] == pytest.approx(0.17)
    assert math.isnan(table.at["none", "paper cifar10 ASR"])
    assert table.at["abl_oracle", "paper cifar10 ASR"] == pytest.approx(58.2)
    assert published_ieu().source.str.contains("arXiv:2410.01128|Li 2024").all()

    # where no attack is learnt the table says which were not, and nothing is averaged
    unlearnt = ieu_rows()
    unlearnt = unlearnt[~((unlearnt.namespace == "blend_a") & (unlearnt.method == "none"))]
    assert ieu_reproduction(unlearnt, published_ieu()).to_dict("records") == [
        {"not learnt": "blend_b (30.0%)", "attacks": 0}
    ]
    assert ieu_orderings(unlearnt).empty

    verdicts = ieu_orderings(ieu_rows()).set_index("paper's ordering").verdict.to_dict()
    assert verdicts == {
        "ieu < abl_oracle": "not resolved",  # two seeds far apart
        "ieu > abl_oracle": "not resolved",
        "ieu < ibau": "holds",
        "ieu > ibau": "holds",
    }


def test_a_table_exists_only_when_every_file_does(tmp_path):
    table = TableDataset(filepath=str(tmp_path / "t.csv"), markdown=True)
    table.save(pd.DataFrame({"a": [1]}))
    assert table.exists()
    (tmp_path / "t.md").unlink()
    assert not table.exists(), "a run killed before the Markdown copy must write it again"


def test_a_model_whose_spec_is_missing_does_not_exist_and_saving_replaces_the_spec_last(
    tmp_path,
):
    dataset = ModelDataset(filepath=str(tmp_path / "m"))
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet10t", 3, {}, 16))
    dataset.save(model)
    assert dataset.exists()
    (tmp_path / "m" / "spec.json").unlink()
    assert not dataset.exists()
    (tmp_path / "m" / ".model.safetensors.x1.tmp").write_bytes(b"half")
    assert [p.name for p in dataset.remove_temporaries()] == [".model.safetensors.x1.tmp"]
    dataset.save(model)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "spec.json"]


def test_replicate_names_split_back_into_namespace_and_seed():
    assert split_replicate(replicate_name("blend.w04", 12)) == ("blend.w04", 12)
    for bad in ("blended", "blended.seed_", "blended.seed_x"):
        with pytest.raises(ValueError, match="no '<namespace>.seed_<s>' name"):
            split_replicate(bad)


def test_potion_table_says_what_equals_doing_nothing_and_which_seeds_learnt_the_trigger():
    rows = [potion_rows()]
    for seed, (asr, healed) in enumerate(((0.62, 0.75), (0.01, 0.66))):
        rows.append(key(seed).rows("none", {"attack_success_rate": asr}))
        rows.append(
            key(seed).rows("none", {"poison_healed": healed, "model_damage": 0.0}, "share_0.1")
        )
        rows.append(
            key(seed).rows("none", {"poison_healed": healed, "model_damage": 0.0}, "share_1")
        )
    table = potion_table(pd.concat(rows)).set_index("method")
    # xlf_ptn 0.75 +- 0.64 against none's 0.705 +- 0.57: not resolved from doing nothing
    assert table.at["xlf_ptn", "healed vs none"] == "overlap"
    assert table.at["none", "healed vs none"] == ""
    assert table.at["none", "undefended ASR per seed"] == "62.0%, 1.0%"
    assert table.at["xlf_ptn", "undefended ASR per seed"] == ""


def test_share_table_puts_shares_in_columns_with_intervals_over_seeds_and_give_ups():
    table = share_table(potion_rows())
    assert list(table.columns) == ["namespace", "method", "metric", "N (seeds)", "0.1", "1"]
    healed = table[table.metric == "healed %"].set_index("method")
    # share 0.1: 0.6 and 0.7 over two seeds; share 1: 0.8 and 0.9, seed 1's search gave up
    assert healed.at["xlf_ptn", "0.1"] == f"65.0 ± {12.7062 * 7.07107 / math.sqrt(2):.1f}"
    assert healed.at["xlf_ptn", "1"].endswith("[1 gave up]")
    damage = table[table.metric == "damage pp"].set_index("method")
    assert damage.at["xlf_ptn", "1"] == "-3.0 ± 0.0 [1 gave up]"
    assert int(healed.at["xlf_ptn", "N (seeds)"]) == 2
