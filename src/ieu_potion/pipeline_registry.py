"""The project's pipelines, templated from the run's parameters.

The parameters are validated first (schema.py).  Each registered pipeline carries the
upstream nodes it needs (``kedro run --pipelines baselines`` works on a fresh clone); the
default pipeline is their union, in which every node appears once.  ``reporting`` reads
the outputs of all the others, so it is the whole run plus the report.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from ieu_potion.adapters.config_loader import run_parameters
from ieu_potion.pipelines import (
    baselines,
    data_poisoning,
    ieu_finetune,
    potion_unlearning,
    reporting,
)
from ieu_potion.schema import validate_parameters


def register_pipelines() -> dict[str, Pipeline]:
    params = run_parameters()
    validate_parameters(params)  # bad parameters are reported before anything is built
    own = {
        "data_poisoning": data_poisoning.create_pipeline(params),
        "ieu_finetune": ieu_finetune.create_pipeline(params),
        "baselines": baselines.create_pipeline(params),
        "potion_unlearning": potion_unlearning.create_pipeline(params),
    }
    full = sum(own.values(), ieu_finetune.backbone_pipeline(params))
    pipelines = {name: full.to_outputs(*p.all_outputs()) for name, p in own.items()}
    pipelines["reporting"] = full + reporting.create_pipeline(params, full)
    pipelines["__default__"] = pipelines["reporting"]
    return pipelines
