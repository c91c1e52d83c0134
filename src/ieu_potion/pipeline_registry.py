"""The project's pipelines, templated from the run's parameters."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from ieu_potion.config import run_parameters
from ieu_potion.pipelines import data_poisoning


def register_pipelines() -> dict[str, Pipeline]:
    params = run_parameters()
    pipelines = {"data_poisoning": data_poisoning.create_pipeline(params)}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
