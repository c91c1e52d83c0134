"""The building blocks of every settings class, and how a parameter block becomes one.

Each module that takes settings declares them as a settings class (``settings``: a frozen
pydantic dataclass validated on construction) built from the types below;
``settings_from_params`` turns a parameter block into one, every failure named by its
parameter path (``ParameterError``).  No Kedro here: the Kedro side of configuration is
``adapters/config_loader.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Annotated, Any

import pydantic.dataclasses
from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError


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


class Block(BaseModel):
    """A parameter block made of several settings (a pydantic model, frozen, no unknown
    keys, finite numbers only)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


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


# Blocks validated in this process: (class, path, canonical JSON of the mapping) -> settings.
_VALIDATED: dict[tuple[Any, str, str], Any] = {}


def canonical(params: Any) -> str:
    """A mapping as JSON with sorted keys: equal blocks give equal text."""
    return json.dumps(params, sort_keys=True, default=repr)


def with_own_entries(cls: Any, shared: Any, own: dict[str, Any] | None, where: str) -> Any:
    """The settings ``cls`` of a shared block (a ``cls`` or a mapping) with one namespace's
    own entries over it, validated as the block at ``where`` (``<namespace>.<block>``):
    an entry that is a mapping over a mapping (``ptn``, ``augment``) is merged key by key,
    any other replaces the shared value.  Without own entries, the shared settings."""
    base = settings_from_params(cls, shared, where.rsplit(".", 1)[-1])
    if not own:
        return base
    if not isinstance(own, dict):
        raise ParameterError(f"{where} must be a mapping of settings, got {own!r}")
    merged = dataclasses.asdict(base)
    for name, value in own.items():
        below = merged.get(name)
        both = isinstance(below, dict) and isinstance(value, dict)
        merged[name] = {**below, **value} if both else value
    return settings_from_params(cls, merged, where)


def settings_from_params(cls: Any, params: Any, where: str) -> Any:
    """Validate a parameter block (a mapping) into the settings class ``cls``: types,
    ranges, finiteness and unknown keys, each failure named by its path below ``where``.

    A value that already is a ``cls`` is returned as it is: a Kedro run hands its nodes the
    blocks the schema validated (hooks.py), and a settings object is immutable.  A mapping
    is validated once per process: asked for again, the same block gives the same object."""
    if isinstance(params, cls):
        return params
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParameterError(f"{where} must be a mapping of settings, got {params!r}")
    key = (cls, where, canonical(params))
    if key not in _VALIDATED:
        try:
            _VALIDATED[key] = _adapter(cls).validate_python(params)
        except ValidationError as exc:
            raise parameter_error(exc, where, cls) from None
    return _VALIDATED[key]
