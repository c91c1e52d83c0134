"""``DaskRunner``: the project's pipelines on a Dask cluster, one task per node.

    kedro run --runner ieu_potion.runner.DaskRunner                          # a local cluster
    kedro run --runner ieu_potion.runner.DaskRunner --runner-params address=tcp://host:8786
    DASK_SCHEDULER_ADDRESS=tcp://host:8786 kedro run --runner ieu_potion.runner.DaskRunner

The driver (the ``kedro run`` process) walks the pipeline's dependency graph and submits a
node as soon as every node it depends on has finished, so independent attack namespaces
and seeds run side by side on the workers.  A node's inputs and outputs go through the
catalog, never through Dask: every dataset a node exchanges must therefore be persisted
where every worker can read it: a file system every worker mounts at the same path, or
an object store (``data_root: s3://bucket/run``, docs/scaling.md); the runner refuses a
pipeline that would pass data between nodes in memory.  Each worker runs one node at a
time; the node's own hooks run on the worker.

Torch's CPU results depend on its intra-op thread count (reductions are split per
thread), and Dask starts its local workers with ``OMP_NUM_THREADS=1``.  A Dask run gives
the bytes of a sequential run with the same thread count: ``torch_threads=n`` sets it on
the workers (``--runner-params n_workers=2,torch_threads=2``).

Without an address (argument, or Dask's ``scheduler-address`` setting, which the
``DASK_SCHEDULER_ADDRESS`` environment variable sets) the runner starts a local cluster of
``n_workers`` processes on the loopback address and closes it at the end.  On a machine
with GPUs, start one worker per GPU (``dask-cuda-worker``, or ``dask worker`` with
``CUDA_VISIBLE_DEVICES`` set per worker): CUDA cannot be initialised again in a forked
process, which is why Kedro's ParallelRunner is no choice for GPU nodes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from itertools import chain
from typing import TYPE_CHECKING, Any

import torch
from kedro.framework import project
from kedro.framework.hooks.manager import (
    _create_hook_manager,
    _register_hooks,
    _register_hooks_entry_points,
)
from kedro.io import MemoryDataset
from kedro.runner import AbstractRunner
from kedro.runner.task import Task

from ieu_potion.training import distributed
from ieu_potion.training.engine import set_deterministic

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager

log = logging.getLogger(__name__)


def run_node_on_worker(
    node: Node,
    catalog: CatalogProtocol,
    package_name: str | None,
    run_id: str | None,
    torch_threads: int | None,
    deterministic: bool,
) -> str:
    """Run ``node`` on a Dask worker with a hook manager of its own (a plugin manager
    cannot be sent between processes), the run's torch settings applied in the worker
    (the driver's hooks set them in the driver only); returns the node's name."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    set_deterministic(deterministic)
    if package_name and package_name != project.PACKAGE_NAME:  # read now: set by configure
        project.configure_project(package_name)
    hook_manager = _create_hook_manager()
    _register_hooks(hook_manager, project.settings.HOOKS)
    _register_hooks_entry_points(hook_manager, project.settings.DISABLE_HOOKS_FOR_PLUGINS)
    Task(node, catalog, is_async=False, hook_manager=hook_manager, run_id=run_id).execute()
    return node.name


# Dask starts workers with MALLOC_TRIM_THRESHOLD_ set, which freezes glibc's mmap threshold
# at 128 KiB: every larger tensor is then mapped and unmapped afresh, which made training
# in a worker 1.8x slower here (docs/benchmarks.md); 32 MiB is the ceiling glibc's own
# adaptive threshold would reach.
LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 * 2**20}


def _count(name: str, value: int | str) -> int:
    """A positive integer setting (``--runner-params`` passes strings)."""
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"DaskRunner {name} must be an integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"DaskRunner {name} must be >= 1, got {count}")
    return count


class DaskRunner(AbstractRunner):
    """Runs each node as a task on a Dask cluster (see the module's documentation)."""

    def __init__(
        self,
        address: str | None = None,
        n_workers: int | str = 2,
        torch_threads: int | str | None = None,
        is_async: bool = False,
    ) -> None:
        super().__init__(is_async=False)
        if is_async:
            raise ValueError("DaskRunner loads and saves on the workers; drop --async")
        if distributed.launched_ranks() > 1:
            raise ValueError(
                "DaskRunner under torchrun: its workers join no process group, so every "
                "rank would run every node; use one or the other"
            )
        self.address = address
        self.n_workers = _count("n_workers", n_workers)
        self.torch_threads = (
            None if torch_threads is None else _count("torch_threads", torch_threads)
        )

    def _get_executor(self, max_workers: int) -> None:
        return None  # nodes go to the cluster's scheduler, not to a local executor

    def _client(self):
        import dask
        from distributed import Client, LocalCluster

        address = self.address or dask.config.get("scheduler-address", None)
        if address:
            log.info("DaskRunner: connecting to the scheduler at %s", address)
            return Client(address), None
        with dask.config.set(LOCAL_WORKER_CONFIG):
            cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
        log.info("DaskRunner: started a local cluster of %d workers", self.n_workers)
        return Client(cluster), cluster

    @staticmethod
    def _check_persisted(pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        """Refuse data passed between nodes in memory: a worker cannot see it."""
        exchanged = pipeline.all_outputs() & pipeline.all_inputs()
        in_memory = sorted(
            name
            for name in exchanged
            if isinstance(catalog.get(name, fallback_to_runtime_pattern=True), MemoryDataset)
        )
        if in_memory:
            raise ValueError(
                f"DaskRunner needs every dataset passed between nodes in the catalog with "
                f"a file-backed type; these would stay in one process's memory: {in_memory}"
            )

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        from distributed import wait

        self._check_persisted(pipeline, catalog)
        params = catalog.load("parameters") if "parameters" in catalog else {}
        deterministic = bool(params.get("deterministic", False))
        dependencies = pipeline.node_dependencies
        todo, done = set(dependencies), set()
        load_counts = Counter(chain.from_iterable(n.inputs for n in pipeline.nodes))
        client, cluster = self._client()
        try:
            running: dict[Any, Node] = {}
            while todo or running:
                ready = [n for n in todo if dependencies[n] <= done]
                for node in sorted(ready, key=lambda n: n.name):
                    todo.discard(node)
                    future = client.submit(
                        run_node_on_worker,
                        node,
                        catalog,
                        project.PACKAGE_NAME,
                        run_id,
                        self.torch_threads,
                        deterministic,
                        key=f"{node.name}-{run_id or os.getpid()}",
                        pure=False,
                    )
                    running[future] = node
                if not running:
                    raise RuntimeError(f"no node can run; waiting: {sorted(map(str, todo))}")
                finished = wait(list(running), return_when="FIRST_COMPLETED").done
                for future in finished:
                    node = running.pop(future)
                    try:
                        future.result()
                    except Exception:
                        for other in running:
                            other.cancel()
                        self._suggest_resume_scenario(pipeline, done, catalog)
                        raise
                    done.add(node)
                    self._release_datasets(node, catalog, load_counts, pipeline)
                    log.info(
                        "Completed %d out of %d nodes (%s)", len(done), len(dependencies), node.name
                    )
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
