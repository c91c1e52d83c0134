"""Checks that run before any node (bad input is reported before work starts), and the
run's progress after every node."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from ieu_potion.adapters import tracking
from ieu_potion.adapters.config_loader import run_source_data
from ieu_potion.data.errors import DataLayoutError
from ieu_potion.io import FolderLock, atomic_write_text
from ieu_potion.results import fingerprint
from ieu_potion.schema import check_source_fit, typed_blocks, validate_parameters
from ieu_potion.training import distributed
from ieu_potion.training.engine import set_deterministic

log = logging.getLogger(__name__)


# The configuration (a fingerprint per top-level block) of the run that last wrote a data
# folder, beside its lock.
RUN_CONFIG = ".run_config.json"


def data_root(context) -> str:
    """The run's ``data_root`` (globals.yml): an fsspec URL as it is, a local folder
    under the project's."""
    root = str(context.config_loader["globals"].get("data_root", "data"))
    return root if "://" in root else str(Path(context.project_path) / root)


class RunLockHook:
    """One run at a time in a data folder: before anything else (``tryfirst``), the run
    locks its ``data_root`` (``io.FolderLock``), so that a second ``kedro run`` on the same
    folder is refused with the first one's pid and command instead of deleting the first
    run's temporary files, losing its rows in the results archive or reading its
    half-written models.  Under torchrun rank 0 locks for its ranks; a remote data root
    (an fsspec URL) is not locked, and the log says so."""

    def __init__(self) -> None:
        self._root: str | None = None
        self._lock: FolderLock | None = None
        self._record: dict[str, Any] | None = None  # this run's configuration, to be kept

    @hook_impl
    def after_context_created(self, context) -> None:
        self._root = data_root(context)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if distributed.launched_rank() != 0 or self._root is None:
            return
        if "://" in self._root:
            log.info("data root %s is remote: not locked against a second run", self._root)
            return
        self._lock = FolderLock(self._root)
        self._lock.acquire(
            {
                "pid": os.getpid(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "host": socket.gethostname(),
            }
        )
        parameters = catalog.load("parameters") if "parameters" in catalog else {}
        blocks = {"source_images": fingerprint(run_source_data())}
        blocks.update({name: fingerprint(value) for name, value in parameters.items()})
        self._record = {"env": run_params.get("env"), "blocks": blocks}
        if run_params.get("only_missing_outputs"):
            self._compare(blocks)

    def _compare(self, blocks: dict[str, str]) -> None:
        """Warn where the folder's artifacts were made under another configuration, which
        ``--only-missing-outputs`` would reuse for this one."""
        try:
            earlier = json.loads((Path(self._root) / RUN_CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # no record: a fresh folder, or one from before records were kept
        before = earlier.get("blocks", {}) if isinstance(earlier, dict) else {}
        changed = sorted(k for k in set(before) | set(blocks) if before.get(k) != blocks.get(k))
        if changed:
            log.warning(
                "resuming in %s, whose artifacts were made by a run of another configuration "
                "(differing: %s): --only-missing-outputs reuses what that run wrote; for "
                "results of this configuration alone, rerun without it or give this run a "
                "data_root of its own",
                self._root,
                ", ".join(changed),
            )

    @hook_impl
    def after_node_run(self) -> None:
        """The first node done records the configuration that wrote the folder (a run
        refused before any node writes nothing; under Dask, whose nodes run on the
        workers, the run's end records it)."""
        self._keep_record()

    def _keep_record(self) -> None:
        if self._record is not None and self._lock is not None:
            atomic_write_text(Path(self._root) / RUN_CONFIG, json.dumps(self._record))
            self._record = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._keep_record()
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        self._record = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class TrackingHook:
    """Optional MLflow tracking (``adapters.tracking``, docs/tracking.md), off unless
    ``tracking.yml`` or ``IEU_POTION_MLFLOW=1`` turns it on.  The histories and results
    tables are logged as each node saves them; whatever a runner's workers saved out of
    this process's sight (Dask), or an earlier run left for ``--only-missing-outputs``, is
    logged from the catalog when the run ends, with the reporting layer's files."""

    def __init__(self) -> None:
        self._config: tracking.TrackingConfig | None = None
        self._root = "data"
        self._tracker: tracking.RunTracker | None = None
        self._pid = 0

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            conf = context.config_loader["tracking"]
        except MissingConfigException:  # a project without tracking.yml: off
            conf = {}
        self._config = tracking.tracking_config(conf)
        self._root = data_root(context)

    @hook_impl(trylast=True)  # after the parameters are validated
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._tracker = None
        if self._config is None or not self._config.enabled or distributed.launched_rank():
            return
        parameters = catalog.load("parameters") if "parameters" in catalog else {}
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        env = run_params.get("env") or "local"
        self._tracker = tracking.RunTracker.start(
            self._config,
            self._root,
            parameters,
            run_name=f"{env} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={"env": env, "command": command[:5000], "host": socket.gethostname()},
        )
        self._pid = os.getpid()

    def _active(self) -> tracking.RunTracker | None:
        return self._tracker if self._pid == os.getpid() else None

    @hook_impl
    def after_node_run(self, outputs: dict[str, Any]) -> None:
        if (tracker := self._active()) is not None:
            for name, data in outputs.items():
                tracker.log_output(name, data)

    @hook_impl
    def after_pipeline_run(self, pipeline, catalog) -> None:
        if (tracker := self._active()) is None:
            return
        for name in sorted(pipeline.all_outputs()):
            dataset = catalog.get(name)
            if tracker.log_artifact(name, dataset) or name in tracker.logged:
                continue
            if tracking.tracked(name) and _all_exist(catalog, [name]):
                tracker.log_output(name, catalog.load(name))
        tracker.finish("FINISHED")
        self._tracker = None

    @hook_impl
    def on_pipeline_error(self) -> None:
        if (tracker := self._active()) is not None:
            tracker.finish("FAILED")
            self._tracker = None


class CleanupBeforeRunHook:
    """Delete the temporary files that writes killed in an earlier run left beside this
    run's outputs; the run holds its data folder's lock (``RunLockHook``), so no other
    live run writes there."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if distributed.launched_rank() != 0:
            return  # under torchrun rank 0 writes, and rank 0 alone clears
        removed = []
        for name in sorted(pipeline.all_outputs()):
            dataset = catalog.get(name)
            if hasattr(dataset, "remove_temporaries"):
                removed += dataset.remove_temporaries()
        if removed:
            log.info("removed %d temporary files of interrupted writes", len(removed))


class ValidateBeforeRunHook:
    """Check everything the run reads before any node starts.

    The whole parameter tree is validated against the schema (schema.py: types, ranges,
    cross-references; each failure named by its path), once: the catalog's parameter
    datasets then hold the validated settings objects, which the nodes are handed as they
    are (``config.settings_from_params`` validates only mappings), deterministic algorithms are
    switched on where ``deterministic: true``, the torchrun ranks join their process
    group where ``distributed: true`` (and leave it when the run ends), and source data
    sets are asked whether they can load (path, layout); a failure names the catalog
    entry.  A source that knows its class count and size without loading its images
    (``extent``) has the poisoning settings checked against them (``target_class``,
    ``count``: ``schema.check_source_fit``).
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        params = None
        if "parameters" in catalog:
            params = validate_parameters(catalog.load("parameters"))
            for name, block in typed_blocks(params).items():
                if name in catalog:  # the parameter's MemoryDataset now holds the object
                    catalog.get(name).save(block)
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:") or name == "parameters":
                continue
            dataset = catalog.get(name)
            if hasattr(dataset, "check"):
                try:
                    dataset.check()
                except (DataLayoutError, ValueError) as exc:
                    raise DataLayoutError(
                        f"catalog entry {name!r} ({type(dataset).__name__}) cannot load: {exc}"
                    ) from exc
            if hasattr(dataset, "extent") and params is not None:
                check_source_fit(params, *dataset.extent(), name)
        if params is not None:
            set_deterministic(params.deterministic)
            distributed.join(params.distributed)
        log.info("inputs of %d nodes checked", len(pipeline.nodes))

    @hook_impl
    def after_pipeline_run(self) -> None:
        distributed.stop()

    @hook_impl
    def on_pipeline_error(self) -> None:
        distributed.stop()


# Node seconds of earlier runs, per configuration, in the project folder (beside run.log).
RUN_TIMES = "run_times.json"
KEPT_CONFIGURATIONS = 20


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class ProgressHook:
    """After every node, one log line: how many of the run's nodes are done, the node's
    time, the time since the run started and, where an earlier run of the same
    configuration recorded its node times (``run_times.json``), an estimate of the time
    left (the sum of the recorded times of the nodes still to run).  The times are saved
    after every node, so a killed run still leaves them to the run that resumes it.

    Under ``--only-missing-outputs`` the count and the estimate cover the nodes with an
    output missing and everything downstream of them (what Kedro reruns, give or take its
    handling of in-memory outputs).  Only the process that started the pipeline logs:
    Dask workers run their nodes with hooks of their own, which never saw the pipeline
    start, and the children a parallel runner forks stay quiet."""

    def __init__(self) -> None:
        self._run: dict[str, Any] | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if distributed.launched_rank() != 0:
            return
        parameters = catalog.load("parameters") if "parameters" in catalog else {}
        path = Path(run_params.get("project_path") or ".") / RUN_TIMES
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}  # none yet, or unreadable: this run starts a new record
        if not isinstance(stored, dict):
            stored = {}
        # runs with equal keys (environment, every parameter, the source data's catalog
        # entry) do the same work
        key = fingerprint([run_params.get("env"), parameters, run_source_data()])
        recorded = stored.pop(key, {})
        nodes = pipeline.nodes
        if run_params.get("only_missing_outputs"):
            missing = [n.name for n in nodes if not _all_exist(catalog, n.outputs)]
            nodes = pipeline.from_nodes(*missing).nodes if missing else []
        self._run = {
            "pid": os.getpid(),
            "path": path,
            "key": key,
            "stored": stored,
            "recorded": recorded if isinstance(recorded, dict) else {},
            "nodes": [node.name for node in nodes],
            "seconds": {},
            "node_start": {},
            "start": time.monotonic(),
        }

    def _active(self) -> dict[str, Any] | None:
        run = self._run
        return run if run is not None and run["pid"] == os.getpid() else None

    @hook_impl
    def before_node_run(self, node) -> None:
        if (run := self._active()) is not None:
            run["node_start"][node.name] = time.monotonic()

    @hook_impl
    def after_node_run(self, node) -> None:
        run = self._active()
        if run is None or node.name not in run["node_start"]:
            return
        now = time.monotonic()
        run["seconds"][node.name] = now - run["node_start"][node.name]
        left = [name for name in run["nodes"] if name not in run["seconds"]]
        known = [run["recorded"][name] for name in left if name in run["recorded"]]
        estimate = ""
        if left and known:
            estimate = f"; about {_duration(sum(known))} left"
            if len(known) < len(left):
                estimate += f" (+{len(left) - len(known)} nodes not timed before)"
        log.info(
            "node %d/%d done: %s in %s; %s since the run started%s",
            len(run["seconds"]),
            max(len(run["nodes"]), len(run["seconds"])),
            node.name,
            _duration(run["seconds"][node.name]),
            _duration(now - run["start"]),
            estimate,
        )
        self._save(run)

    @staticmethod
    def _save(run: dict[str, Any]) -> None:
        # the newest configuration last; the oldest ones dropped past KEPT_CONFIGURATIONS
        kept = list(run["stored"].items())[-(KEPT_CONFIGURATIONS - 1) :]
        times = {**run["recorded"], **{k: round(v, 3) for k, v in run["seconds"].items()}}
        try:
            atomic_write_text(run["path"], json.dumps({**dict(kept), run["key"]: times}))
        except OSError as exc:  # a read-only project folder: the run goes on without it
            log.warning("could not record node times in %s: %s", run["path"], exc)


def _all_exist(catalog, names) -> bool:
    try:
        return all(catalog.exists(name) for name in names)
    except Exception:  # a dataset that cannot tell counts as missing: its node reruns
        return False
