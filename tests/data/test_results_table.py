import pandas as pd

from ieu_potion.data.datasets import ResultsTableDataset
from ieu_potion.reporting.results import RESULT_COLUMNS, potion_table, result_rows


def test_saving_upserts_rows_and_writes_csv_and_parquet(tmp_path):
    table = ResultsTableDataset(filepath=str(tmp_path / "results.csv"))
    assert list(table.load().columns) == list(RESULT_COLUMNS)
    table.save(result_rows("d", "badnets_white", "none", 0, {"clean_accuracy": 0.8, "seconds": 3}))
    table.save(result_rows("d", "badnets_white", "ieu", 0, {"clean_accuracy": 0.9}))
    table.save(result_rows("d", "badnets_white", "none", 0, {"clean_accuracy": 0.85}))
    loaded = table.load()
    assert len(loaded) == 3
    none = loaded[(loaded.method == "none") & (loaded.metric == "clean_accuracy")]
    assert none.value.tolist() == [0.85]
    parquet = pd.read_parquet(tmp_path / "results.parquet")
    assert len(parquet) == 3 and list(parquet.columns) == list(RESULT_COLUMNS)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "results.csv",
        "results.parquet",
    ]


def test_potion_table_averages_shares_and_keeps_one_shot_and_realistic_apart():
    rows = pd.concat(
        [
            result_rows(
                "d", "a", "xlf_ptn", 0, {"poison_healed": h, "model_damage": m}, discovery_share=s
            )
            for s, h, m in (
                ("share_0.1", 0.6, -1.0),
                ("share_1", 0.8, -3.0),
                ("one_shot", 0.2, 0.0),
                ("ieu_gate", 0.5, -0.5),
            )
        ]
        + [result_rows("d", "a", "none", 0, {"clean_accuracy": 0.9})]
    )
    table = potion_table(rows).set_index("method")
    assert table.loc["xlf_ptn", "healed_mean"] == 0.7 and table.loc["xlf_ptn", "shares"] == 2
    assert table.loc["xlf_ptn", "damage_mean"] == -2.0
    assert table.loc["xlf_ptn", "one_shot_healed"] == 0.2
    assert table.loc["xlf_ptn", "realistic_healed"] == 0.5, "realistic is not a share"
    assert "none" not in table.index, "rows without a discovery share are not Potion results"
