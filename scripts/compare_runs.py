"""Compare two variants of the code or settings over seeds, from runs' results.

Each variant is one or more data folders of `kedro run`s, e.g. a seed-0 run and a
``seeds=[1,2]`` run of the same configuration.  A finished run is read from its
``08_reporting/tables/results_long.csv``; a run still going, or stopped, from the results
files its finished nodes wrote (``07_model_output/<ns>/seed_<s>/results_*.parquet``).
Rows are pooled over seeds per namespace, method, discovery share and metric; for each,
the script prints both variants' means with 95% Student-t intervals, the difference, and
whether the intervals overlap.  Timing metrics are left out (they measure the machine);
``--metrics`` narrows the list.

    .venv/bin/python scripts/compare_runs.py --a /tmp/old0/data /tmp/old12/data \\
        --b /tmp/new0/data /tmp/new12/data --markdown
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ieu_potion.reporting.stats import interval, overlap, with_interval
from ieu_potion.reporting.tables import markdown_table
from ieu_potion.results import TIMING_METRICS

GROUP = ["namespace", "method", "discovery_share", "metric"]
RESULTS = Path("08_reporting/tables/results_long.csv")
NODE_RESULTS = "07_model_output/*/seed_*/results_*.parquet"


def load(folders: list[Path]) -> pd.DataFrame:
    frames = []
    for folder in folders:
        path = folder / RESULTS
        if path.is_file():
            frames.append(pd.read_csv(path))
            continue
        parts = sorted(folder.glob(NODE_RESULTS))
        if not parts:
            raise SystemExit(
                f"neither {path} nor {folder / NODE_RESULTS} found: give a run's data folder"
            )
        frames += [pd.read_parquet(part) for part in parts]
    rows = pd.concat(frames, ignore_index=True)
    twice = rows.duplicated(GROUP + ["seed"])
    if twice.any():
        seeds = sorted(int(s) for s in rows.loc[twice, "seed"].unique())
        raise SystemExit(f"seed(s) {seeds} appear in more than one run of one variant")
    return rows[~rows.metric.isin(TIMING_METRICS)]


def compare(a: pd.DataFrame, b: pd.DataFrame, metrics: list[str] | None) -> pd.DataFrame:
    out = []
    by_a, by_b = a.groupby(GROUP).value, b.groupby(GROUP).value
    for key in sorted(set(by_a.groups) & set(by_b.groups)):  # metrics both variants have
        if metrics and key[-1] not in metrics:
            continue
        ma, ha, na = interval(by_a.get_group(key))
        mb, hb, nb = interval(by_b.get_group(key))
        out.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "N": f"{na}/{nb}",
                "A": with_interval(ma, ha, digits=3),
                "B": with_interval(mb, hb, digits=3),
                "B - A": f"{mb - ma:+.3f}",
                "intervals": overlap(ma, ha, mb, hb),
            }
        )
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, nargs="+", required=True, help="variant A's runs")
    parser.add_argument("--b", type=Path, nargs="+", required=True, help="variant B's runs")
    parser.add_argument("--metrics", nargs="*", help="metrics to compare (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    table = compare(load(args.a), load(args.b), args.metrics)
    if table.empty:
        raise SystemExit("no metric appears in both variants")
    if args.markdown:
        print(markdown_table(table))
    else:
        print(table.to_string(index=False))
    counts = table.intervals.value_counts()
    print(f"\nintervals: {counts.get('overlap', 0)} overlap, {counts.get('apart', 0)} apart")


if __name__ == "__main__":
    main()
