"""Where a `kedro run` spends its time: the whole run under cProfile, in a scratch copy.

The project's configuration is copied into a temporary folder (so the run starts from
nothing and leaves the project's ``data/`` alone) and run in this process under cProfile.
Prints the wall time, the project's functions by cumulative time and all functions by
own time, and writes the raw statistics to ``--stats`` for ``python -m pstats``.

    .venv/bin/python benchmarks/profile_run.py --stats /tmp/default_run.pstats
    .venv/bin/python benchmarks/profile_run.py --pipelines data_poisoning
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_run import scratch_project  # noqa: E402


def run(project: Path, env: str | None, pipeline: str | None) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        session.run(pipeline_names=[pipeline] if pipeline else None)


def table(stats: pstats.Stats, order: str, *restrictions: str | int) -> str:
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats(order).print_stats(*restrictions)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=None)
    parser.add_argument("--pipelines", default=None)
    parser.add_argument("--stats", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    with tempfile.TemporaryDirectory() as tmp:
        project = scratch_project(Path(tmp))
        os.chdir(project)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(run, project, args.env, args.pipeline)
        wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    if args.stats:
        stats.dump_stats(args.stats)
    print(f"wall time {wall:.1f} s (env {args.env or 'local'}, pipeline {args.pipeline or 'all'})")
    print(table(stats, "cumulative", "ieu_potion", args.limit))
    print(table(stats, "tottime", args.limit))


if __name__ == "__main__":
    main()
