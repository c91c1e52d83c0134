"""Access to the run's configuration while pipelines are being built.

Kedro builds pipelines after the session has created its config loader, but it does not
hand that loader to ``register_pipelines``.  Pipelines here are templated from YAML (one
namespace per attack listed in the parameters), so they need the parameters of the
environment actually being run (``--env cifar10``, ``--params ...``).  ``ProjectConfigLoader``
remembers the most recently created loader for that purpose; without one (a test building
pipelines directly, say) the project's ``conf`` folder is read with the default environment.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

_active: OmegaConfigLoader | None = None

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ProjectConfigLoader(OmegaConfigLoader):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._source_images: dict[str, Any] | None = None
        global _active
        _active = self

    def source_images(self) -> dict[str, Any]:
        """The catalog entry ``source_images``, read once (every pipeline template's
        fingerprint needs it, and reading the catalog parses its YAML files anew)."""
        if self._source_images is None:
            self._source_images = dict(self["catalog"].get("source_images") or {})
        return self._source_images


def _loader(env: str | None = None, runtime_params: dict[str, Any] | None = None):
    return ProjectConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env="local",
        env=env,
        runtime_params=runtime_params,
    )


def run_parameters() -> dict[str, Any]:
    """The parameters of the run being set up (environment and ``--params`` applied)."""
    loader = _active if _active is not None else _loader()  # a loader is a mapping
    return loader["parameters"]


def run_source_data() -> dict[str, Any]:
    """The catalog entry ``source_images`` of the run being set up (for fingerprints)."""
    return (_active if _active is not None else _loader()).source_images()


def project_config(env: str = "local", runtime_params: dict[str, Any] | None = None):
    """(parameters, catalog configuration) of this project's ``conf`` for ``env``; for
    scripts and benchmarks that run library code outside a Kedro session."""
    loader = _loader(env, runtime_params)
    return loader["parameters"], loader["catalog"]


def settings_from_params(cls: Any, params: dict[str, Any], where: str) -> Any:
    """A settings dataclass (every field with a default) from a parameter block: unknown
    keys, wrong types (from the annotations: bool, int, float, str, optionally None) and
    non-finite numbers are rejected with the parameter's path; ``check(where)`` then
    tests the ranges."""
    if not isinstance(params, dict):
        raise ValueError(f"{where} must be a mapping of settings, got {params!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; valid: {', '.join(valid)}")
    values = {}
    for name, value in params.items():
        allowed = typing.get_args(hints[name]) or (hints[name],)
        path = f"{where}.{name}"
        if value is None and type(None) in allowed:
            values[name] = None
            continue
        if float in allowed and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{path} must be a finite number, got {value!r}")
            values[name] = float(value)
        elif type(value) in allowed and type(value) in (int, bool, str):
            values[name] = value
        else:
            kinds = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"{path} must be {kinds}, got {value!r}")
    settings = cls(**values)
    settings.check(where)
    return settings
