"""The Dask runner's refusals (its end-to-end run is in tests/test_run.py)."""

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline

from ieu_potion.runner import DaskRunner
from tests.badinput import bad_input, rejects


def double(x):
    return 2 * x


@bad_input(
    "a pipeline passing data between nodes in memory, run with the DaskRunner",
    "ValueError naming the datasets before a cluster starts: a worker cannot see another's memory",
)
def test_data_passed_in_memory_is_refused_before_a_cluster_starts():
    pipe = pipeline(
        [node(double, "params:x", "twice", name="a"), node(double, "twice", "four", name="b")]
    )
    catalog = DataCatalog(datasets={"params:x": MemoryDataset(1)})
    rejects(lambda: DaskRunner().run(pipe, catalog), ValueError, "memory: ['twice']")


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        pytest.param(
            {"n_workers": "0"},
            "n_workers must be >= 1",
            marks=bad_input("`--runner-params n_workers=0`", "ValueError: n_workers >= 1"),
        ),
        pytest.param(
            {"torch_threads": "two"},
            "torch_threads must be an integer",
            marks=bad_input("`--runner-params torch_threads=two`", "ValueError: an integer"),
        ),
        pytest.param(
            {"is_async": True},
            "drop --async",
            marks=bad_input("`--async` with the DaskRunner", "ValueError: loads run on workers"),
        ),
    ],
)
def test_bad_runner_settings_are_refused(kwargs, culprit):
    rejects(lambda: DaskRunner(**kwargs), ValueError, culprit)


@bad_input(
    "the DaskRunner started by torchrun on several ranks",
    "ValueError before a cluster starts: every rank would run every node",
)
def test_the_dask_runner_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    rejects(DaskRunner, ValueError, "DaskRunner under torchrun")
