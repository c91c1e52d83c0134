"""Access to the run's configuration while pipelines are being built.

Kedro builds pipelines after the session has created its config loader, but it does not
hand that loader to ``register_pipelines``.  Pipelines here are templated from YAML (one
namespace per attack listed in the parameters), so they need the parameters of the
environment actually being run (``--env cifar10``, ``--params ...``).  ``ProjectConfigLoader``
remembers the most recently created loader for that purpose; without one (a test building
pipelines directly, say) the project's ``conf`` folder is read with the default environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

_active: OmegaConfigLoader | None = None

PROJECT_ROOT = Path(__file__).resolve().parents[3]


class ProjectConfigLoader(OmegaConfigLoader):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._source_images: dict[str, Any] | None = None
        global _active
        _active = self

    def __getitem__(self, key: str) -> Any:
        """As Kedro's, except that ``--params`` overrides apply once, over base and the
        environment merged.  Kedro merges them into base's and into the environment's
        parameters separately, and the environment's top-level blocks then replace base's
        whole: under an environment with parameters files of its own, ``--params
        potion.ptn.rho=0.2`` would otherwise leave a ``potion`` block holding ``ptn.rho``
        alone, every other setting back to its default."""
        overrides = self.runtime_params
        if key != "parameters" or not overrides or key in self.data:
            return super().__getitem__(key)
        # the `${runtime_params:...}` resolver still sees them
        self._runtime_params_oc = OmegaConf.create(overrides)
        self.runtime_params = {}
        try:
            params = super().__getitem__(key)
        finally:
            self.runtime_params = overrides
        return OmegaConf.to_container(OmegaConf.merge(params, overrides), resolve=True)

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
