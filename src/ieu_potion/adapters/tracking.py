"""Optional experiment tracking with MLflow (docs/tracking.md).

Off by default.  Turned on by ``mlflow.enabled: true`` in ``conf/<env>/tracking.yml``, or
for one run by the environment variable ``IEU_POTION_MLFLOW=1`` (``0`` turns it off
whatever the file says).  One MLflow run per ``kedro run`` holds the run's parameters
(every top-level block, flattened, with its fingerprint as a tag), and one nested run per
namespace and seed holds what the nodes of that replicate saved:

- each training history (``<name>_history``) as per-epoch metrics ``<name>/<column>``;
- each results table (``results_<method>``) as final metrics ``<method>/<metric>``, or
  ``<method>/<discovery share>/<metric>`` for the Potion rows of one share;
- the reporting layer's files (report, tables, figures) as artifacts.

The store defaults to a SQLite file in the run's data folder, ``<data_root>/mlflow``
(``MLFLOW_TRACKING_URI`` or ``tracking_uri`` name another, a tracking server say).  Only
``mlflow-skinny`` and SQLAlchemy are needed (``pip install -e ".[mlflow]"``): the full
``mlflow`` package, with its UI, can be installed anywhere else to browse the store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ieu_potion.adapters.datasets import (
    HtmlDataset,
    JsonDataset,
    PlotlyFigureDataset,
    TableDataset,
)
from ieu_potion.config import ParameterError, Text, settings, settings_from_params
from ieu_potion.results import fingerprint

log = logging.getLogger(__name__)

SWITCH = "IEU_POTION_MLFLOW"  # 1: track this run, 0: do not, whatever tracking.yml says
STORE_FOLDER = "mlflow"  # under the data root: mlflow.db and the artifacts
# MLflow's own limits on a parameter's value and on a batch of metrics.
MAX_PARAM_LENGTH = 6000
BATCH = 1000
# The reporting layer's data sets, as artifacts: the folder each goes in.
ARTIFACT_FOLDERS = {HtmlDataset: "", TableDataset: "tables", JsonDataset: "tables"}
ARTIFACT_FOLDERS[PlotlyFigureDataset] = "figures"


@settings
class TrackingConfig:
    """The ``mlflow`` block of ``tracking.yml``."""

    enabled: bool = False
    # None: $MLFLOW_TRACKING_URI if set, else sqlite:///<data_root>/mlflow/mlflow.db
    tracking_uri: Text | None = None
    experiment: Text = "ieu-potion"


def tracking_config(conf: Mapping[str, Any] | None) -> TrackingConfig:
    """The settings of ``tracking.yml`` (validated, each bad value named), with the
    ``IEU_POTION_MLFLOW`` switch over ``enabled``."""
    block = dict((conf or {}).get("mlflow") or {})
    config = settings_from_params(TrackingConfig, block, "tracking.mlflow")
    switch = os.environ.get(SWITCH)
    if switch is None:
        return config
    if switch not in ("0", "1"):
        raise ParameterError(f"{SWITCH} must be 0 or 1, got {switch!r}")
    return TrackingConfig(switch == "1", config.tracking_uri, config.experiment)


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested parameter tree as ``{"block.key.subkey": value}``; lists as JSON."""
    if isinstance(tree, Mapping):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = json.dumps(tree, default=str) if isinstance(tree, list | tuple) else str(tree)
    return {prefix: text[:MAX_PARAM_LENGTH]}


def replicate_of(name: str) -> tuple[str, str]:
    """(the replicate a data set belongs to, its own name): ``"ns.seed_0.ieu_history"``
    gives ``("ns.seed_0", "ieu_history")``, ``"seed_0.backbone_history"`` gives
    ``("seed_0", "backbone_history")``, a top-level name ``("", name)``."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("seed_"):
            return ".".join(parts[: i + 1]), ".".join(parts[i + 1 :])
    return "", name


def tracked(name: str) -> bool:
    """Whether a data set is logged as metrics: a training history, or a replicate's
    results table (the reporting layer's whole-run tables are artifacts)."""
    replicate, own = replicate_of(name)
    return own.endswith("_history") or (own.startswith("results_") and bool(replicate))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def history_metrics(name: str, history: pd.DataFrame) -> list[tuple[str, float, int]]:
    """Per-epoch metrics ``(key, value, step)`` of a training history: every numeric
    column but ``epoch`` (the step), keyed ``<name>/<column>``."""
    label = name.removesuffix("_history")
    steps = history["epoch"] if "epoch" in history else pd.Series(range(1, len(history) + 1))
    out = []
    for column in history.columns:
        if column == "epoch" or not pd.api.types.is_numeric_dtype(history[column]):
            continue
        for step, value in zip(steps, history[column], strict=True):
            if (number := _finite(value)) is not None:
                out.append((f"{label}/{column}", number, int(step)))
    return out


def result_metrics(rows: pd.DataFrame) -> list[tuple[str, float, int]]:
    """The results rows as final metrics ``(key, value, 0)``: ``<method>/<metric>``, with
    the discovery share between them where a row has one."""
    out = []
    for row in rows.itertuples(index=False):
        if (number := _finite(row.value)) is None:
            continue
        share = "" if row.discovery_share == "none" else f"{row.discovery_share}/"
        out.append((f"{row.method}/{share}{row.metric}", number, 0))
    return out


@dataclass
class RunTracker:
    """One ``kedro run`` in MLflow: the parent run and a nested run per replicate."""

    client: Any
    parent: str
    experiment_id: str
    children: dict[str, str]
    logged: set[str]

    @classmethod
    def start(
        cls,
        config: TrackingConfig,
        data_root: str,
        parameters: Mapping[str, Any],
        run_name: str,
        tags: Mapping[str, str],
    ) -> RunTracker:
        """Open the store, the experiment and the parent run, and log the parameters."""
        # MLflow's usage telemetry would reach for the internet (DO_NOT_TRACK=1 is not the
        # "true" it looks for); a user's own setting wins.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow 3.18's store warns of an SQLAlchemy 2.1 deprecation no user can act on
        warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy")
        try:
            import mlflow  # noqa: F401  (the optional extra)
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ParameterError(
                f"MLflow tracking is on (tracking.yml's mlflow.enabled or {SWITCH}=1) but "
                "mlflow is not installed: pip install -e '.[mlflow]'"
            ) from None
        uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if uri is None:
            if "://" in data_root:
                raise ParameterError(
                    f"the data root {data_root!r} is remote: set tracking.yml's "
                    "mlflow.tracking_uri (or MLFLOW_TRACKING_URI) to an MLflow store"
                )
            store = Path(data_root).resolve() / STORE_FOLDER
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / 'mlflow.db'}"
            artifacts = (store / "artifacts").as_uri()
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(config.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(config.experiment, artifact_location=artifacts)
        )
        parent = client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
        tracker = cls(client, parent, experiment_id, {}, set())
        tracker._params(parameters)
        log.info("MLflow: run %s in experiment %r at %s", parent, config.experiment, uri)
        return tracker

    def _params(self, parameters: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in flatten(parameters).items()]
        tags = [RunTag(f"fingerprint.{k}", fingerprint(v)) for k, v in parameters.items()]
        for i in range(0, max(len(params), 1), 100):  # MLflow takes 100 parameters a batch
            first = tags if i == 0 else []
            self.client.log_batch(self.parent, params=params[i : i + 100], tags=first)

    def run_of(self, replicate: str) -> str:
        """The run of a replicate (the parent for ``""``), created on first use."""
        if not replicate:
            return self.parent
        if replicate not in self.children:
            run = self.client.create_run(
                self.experiment_id,
                run_name=replicate,
                tags={"mlflow.parentRunId": self.parent, "replicate": replicate},
            )
            self.children[replicate] = run.info.run_id
        return self.children[replicate]

    def log_metrics(self, run: str, metrics: Iterable[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, v, stamp, s) for k, v, s in metrics]
        for i in range(0, len(batch), BATCH):
            self.client.log_batch(run, metrics=batch[i : i + BATCH])

    def log_output(self, name: str, data: Any) -> bool:
        """Log one saved data set if it is tracked (a history or a results table);
        whether it was."""
        if name in self.logged or not tracked(name) or not isinstance(data, pd.DataFrame):
            return False
        replicate, own = replicate_of(name)
        history = own.endswith("_history")
        metrics = history_metrics(own, data) if history else result_metrics(data)
        self.log_metrics(self.run_of(replicate), metrics)
        self.logged.add(name)
        return True

    def log_artifact(self, name: str, dataset: Any) -> bool:
        """Copy a reporting data set's file into the run of its replicate; whether it was."""
        folder = next((f for t, f in ARTIFACT_FOLDERS.items() if type(dataset) is t), None)
        layer = ((getattr(dataset, "metadata", None) or {}).get("kedro-viz") or {}).get("layer")
        if folder is None or layer != "reporting" or not dataset.exists():
            return False
        file = dataset.file
        text = file.read_text(encoding="utf-8")
        self.client.log_text(
            self.run_of(replicate_of(name)[0]), text, f"{folder}/{file.name}".lstrip("/")
        )
        return True

    def finish(self, status: str) -> None:
        """Close the nested runs and the parent with ``status`` (FINISHED or FAILED)."""
        for run in [*self.children.values(), self.parent]:
            self.client.set_terminated(run, status=status)
