"""Access to the run's configuration while pipelines are being built.

Kedro builds pipelines after the session has created its config loader, but it does not
hand that loader to ``register_pipelines``.  Pipelines here are templated from YAML (one
namespace per attack listed in the parameters), so they need the parameters of the
environment actually being run (``--env cifar10``, ``--params ...``).  ``ProjectConfigLoader``
remembers the most recently created loader for that purpose; without one (a test building
pipelines directly, say) the project's ``conf`` folder is read with the default environment.
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Annotated, Any

import pydantic.dataclasses
from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf
from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError

_active: OmegaConfigLoader | None = None

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


class ParameterError(ValueError):
    """A parameter outside its type or range; the message names each parameter's path."""


# The building blocks of every settings class (pydantic dataclasses, validated on
# construction): integers where counts are meant (2.5 and true are refused), finite
# numbers only, no unknown keys.
SETTINGS = ConfigDict(extra="forbid", allow_inf_nan=False)
Count = Annotated[int, Strict(), Field(ge=1)]
Natural = Annotated[int, Strict(), Field(ge=0)]
Real = Annotated[float, Strict()]
Positive = Annotated[float, Strict(), Field(gt=0)]
NonNegative = Annotated[float, Strict(), Field(ge=0)]
Share = Annotated[float, Strict(), Field(gt=0, le=1)]  # (0, 1]
Fraction = Annotated[float, Strict(), Field(gt=0, lt=1)]  # (0, 1)
Text = Annotated[str, Strict(), Field(min_length=1)]
# The decorator of a settings class: a frozen dataclass validated on construction.
settings = functools.partial(pydantic.dataclasses.dataclass, frozen=True, config=SETTINGS)


def distinct(values: tuple) -> tuple:
    """A list setting's validator: no entry twice."""
    if len(set(values)) != len(values):
        raise ValueError(f"lists an entry twice: {list(values)}")
    return values


def _fields(kind: Any) -> dict[str, Any]:
    """The fields of a settings class or pydantic model (empty for anything else)."""
    fields = getattr(kind, "__pydantic_fields__", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _valid_keys(kind: Any, loc: tuple) -> list[str]:
    """The valid keys of the block at ``loc`` below ``kind`` (empty where unknown)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = _fields(kind).get(part)
        if field is None:
            return []
        kind = field.annotation
        while typing.get_args(kind) and not _fields(kind):  # Optional, list, Annotated
            inner = [a for a in typing.get_args(kind) if _fields(a)]
            kind = inner[0] if inner else typing.get_args(kind)[0]
    return sorted(_fields(kind))


_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "none", "union"}


def _is_union_tag(part: Any) -> bool:
    """Whether a location part names a branch of a union (``literal['auto']``,
    ``constrained-float``) rather than a setting or a list index."""
    return isinstance(part, str) and (not part.isidentifier() or part in _TYPE_TAGS)


def _describe(errors: list[dict[str, Any]], where: str, kind: Any) -> str:
    """One line for the errors of one setting (several where a union's branches each
    failed: ``tau: Input should be 'auto' or less than 1, got 1.0``)."""
    error = errors[0]
    loc = [part for part in error["loc"] if not _is_union_tag(part)]
    path = ".".join([where, *(str(part) for part in loc)]).strip(".") or "parameters"
    messages = [e["msg"].removeprefix("Value error, ") for e in errors]
    message = messages[0] + "".join(
        " or " + m.removeprefix("Input should be ") for m in messages[1:]
    )
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        valid = _valid_keys(kind, tuple(loc[:-1]))
        return f"{path}: unknown setting" + (f"; valid: {', '.join(valid)}" if valid else "")
    shown = error.get("input")
    if error["type"] == "value_error" or isinstance(shown, dict):
        return f"{path}: {message}"
    return f"{path}: {message}, got {shown!r}"


def parameter_error(exc: ValidationError, where: str, kind: Any = None) -> ParameterError:
    """One ``ParameterError`` listing every failure of ``exc`` by its parameter path."""
    by_setting: dict[tuple, list[dict[str, Any]]] = {}
    for error in exc.errors(include_url=False):
        key = tuple(part for part in error["loc"] if not _is_union_tag(part))
        by_setting.setdefault(key, []).append(error)
    return ParameterError("; ".join(_describe(e, where, kind) for e in by_setting.values()))


@functools.cache
def _adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def settings_from_params(cls: Any, params: Any, where: str) -> Any:
    """Validate a parameter block (a mapping) into the settings class ``cls``: types,
    ranges, finiteness and unknown keys, each failure named by its path below ``where``."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParameterError(f"{where} must be a mapping of settings, got {params!r}")
    try:
        return _adapter(cls).validate_python(params)
    except ValidationError as exc:
        raise parameter_error(exc, where, cls) from None
