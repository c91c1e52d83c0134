"""Checks that run before any node: bad input is reported before work starts."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from ieu_potion.data.errors import DataLayoutError
from ieu_potion.training.engine import set_deterministic
from ieu_potion.validation import PARAMETER_CHECKS

log = logging.getLogger(__name__)


class CleanupBeforeRunHook:
    """Delete the temporary files that writes killed in an earlier run left beside this
    run's outputs (one run writes a data folder at a time), and switch deterministic
    algorithms on where ``deterministic: true``."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        removed = []
        for name in sorted(pipeline.all_outputs()):
            dataset = catalog.get(name)
            if hasattr(dataset, "remove_temporaries"):
                removed += dataset.remove_temporaries()
        if removed:
            log.info("removed %d temporary files of interrupted writes", len(removed))
        if "params:deterministic" in catalog:
            deterministic = catalog.load("params:deterministic")
            if not isinstance(deterministic, bool):
                raise ValueError(f"deterministic must be true or false, got {deterministic!r}")
            set_deterministic(deterministic)


class ValidateBeforeRunHook:
    """Check every free input of the pipeline about to run.

    Parameters whose last name has a registered check (``attack``, ``discovery``, ...) are
    validated; source data sets are asked whether they can load (path, layout), and a
    failure names the catalog entry.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:"):
                check = PARAMETER_CHECKS.get(name.rsplit(".", 1)[-1].removeprefix("params:"))
                if check is not None:
                    try:
                        check(catalog.load(name))
                    except (ValueError, TypeError, KeyError) as exc:
                        raise ValueError(f"parameter {name!r} is invalid: {exc}") from exc
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
