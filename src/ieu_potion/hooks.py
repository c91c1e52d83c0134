"""Checks that run before any node: bad input is reported before work starts."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.schema import validate_parameters
from ieu_potion.training import distributed
from ieu_potion.training.engine import set_deterministic

log = logging.getLogger(__name__)


class CleanupBeforeRunHook:
    """Delete the temporary files that writes killed in an earlier run left beside this
    run's outputs (one run writes a data folder at a time)."""

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
    cross-references; each failure named by its path), deterministic algorithms are
    switched on where ``deterministic: true``, the torchrun ranks join their process
    group where ``distributed: true`` (and leave it when the run ends), and source data
    sets are asked whether they can load (path, layout); a failure names the catalog
    entry.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if "parameters" in catalog:
            params = validate_parameters(catalog.load("parameters"))
            set_deterministic(params.deterministic)
            distributed.join(params.distributed)
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
        log.info("inputs of %d nodes checked", len(pipeline.nodes))

    @hook_impl
    def after_pipeline_run(self) -> None:
        distributed.stop()

    @hook_impl
    def on_pipeline_error(self) -> None:
        distributed.stop()
