"""Shared by the templated pipelines: which namespaces a pipeline runs for."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, pipeline


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


def per_namespace(
    template: Pipeline,
    params: dict[str, Any],
    pipeline_name: str,
    inputs: set[str],
    parameters: dict[str, str],
    extra: tuple[str, ...] = (),
) -> Pipeline:
    """One copy of ``template`` per namespace listed in ``<pipeline_name>.attacks`` (and
    in ``extra``: namespaces another pipeline needs this one for).

    ``inputs`` stay global (shared by every namespace) and ``parameters`` maps template
    parameters to global ones; every other dataset and parameter is prefixed with the
    namespace.
    """
    names = namespaces(params, pipeline_name)
    names += [ns for ns in extra if ns not in names]
    return sum(
        (
            pipeline(
                template,
                namespace=ns,
                inputs=inputs,
                parameters=parameters,
                tags=[pipeline_name, ns],
            )
            for ns in names
        ),
        Pipeline([]),
    )
