"""Seconds to build every pipeline of an environment (``register_pipelines``) at several
seed counts: building must stay linear in the number of replicates.

    .venv/bin/python benchmarks/pipeline_build_time.py --env benchmark --seeds 3 10 20
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from ieu_potion.adapters import config_loader
from ieu_potion.pipeline_registry import register_pipelines

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="benchmark")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 10, 20])
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, env {args.env}")
    for seeds in args.seeds:
        config_loader.ProjectConfigLoader(
            conf_source=str(ROOT / "conf"),
            env=args.env,
            base_env="base",
            runtime_params={"seeds": seeds},
        )
        start = time.perf_counter()
        nodes = len(register_pipelines()["__default__"].nodes)
        seconds = time.perf_counter() - start
        per_node = 1e3 * seconds / nodes
        print(f"{seeds:4d} seeds: {nodes:6d} nodes, {seconds:6.2f} s, {per_node:.2f} ms a node")


if __name__ == "__main__":
    main()
