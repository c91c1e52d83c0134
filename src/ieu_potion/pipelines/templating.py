"""Shared by the templated pipelines: which namespaces a pipeline runs for."""

from __future__ import annotations

from typing import Any


def namespaces(params: dict[str, Any], pipeline_name: str, block: str = "attack") -> list[str]:
    """The namespaces listed in ``<pipeline_name>.attacks``, each with a ``<ns>.<block>``."""
    names = list((params.get(pipeline_name) or {}).get("attacks", []))
    missing = [ns for ns in names if block not in (params.get(ns) or {})]
    if missing:
        raise ValueError(
            f"{pipeline_name}.attacks lists {missing} but the parameters have no "
            f"'<namespace>.{block}' block for them"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{pipeline_name}.attacks lists a namespace twice: {names}")
    return names


def shared_parameters(*names: str) -> dict[str, str]:
    """Parameter mapping that keeps ``params:<name>`` global inside a namespace."""
    return {f"params:{name}": f"params:{name}" for name in names}
