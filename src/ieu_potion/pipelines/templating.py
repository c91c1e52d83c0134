"""Shared by the templated pipelines: which namespaces a pipeline runs for, once per seed.

A run repeats the work of every attack namespace once per seed listed in ``seeds``; the
Kedro namespace of one repetition is ``<attack namespace>.seed_<s>`` (Kedro-Viz draws the
attack as a group holding one group per seed).  Nodes receive a ``RunKey`` (data set,
namespace, attack, seed, configuration fingerprint), bound when the pipeline is built, so
the rows they write say what produced them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, update_wrapper
from typing import Any

from kedro.pipeline import Pipeline, pipeline

from ieu_potion.adapters.config_loader import run_source_data
from ieu_potion.attacks import TRIGGERS
from ieu_potion.defences.registry import get_defence
from ieu_potion.results import RunKey, fingerprint, replicate_name
from ieu_potion.schema import seed_list, validate_parameters
from ieu_potion.unlearning.potion import PotionConfig


def namespaces(params: dict[str, Any], pipeline_name: str) -> list[str]:
    """The namespaces listed in ``<pipeline_name>.attacks`` (the schema has checked that
    each is poisoned by data_poisoning and has its ``<namespace>.attack`` block)."""
    return list((params.get(pipeline_name) or {}).get("attacks", []))


def seeds(params: dict[str, Any]) -> list[int]:
    """The run's seeds (default [0])."""
    return seed_list(params.get("seeds", [0]))


def backbone_per_seed(params: dict[str, Any]) -> bool:
    return bool(params.get("backbone_per_seed", False))


def backbone_namespace(params: dict[str, Any], seed: int) -> str | None:
    """Where the backbone of ``seed`` lives: one shared (None) or ``seed_<s>``."""
    return f"seed_{seed}" if backbone_per_seed(params) else None


# Parameter blocks that decide each family's numbers (besides the seed): every model
# trained from the backbone depends on these, the families that are no defence on the
# blocks listed here, and a registered defence on its own block (where its settings
# class has any field) and the trusted set's where it reads one.
_COMMON = ("dataset_name", "data_split", "model", "finetune", "backbone_per_seed")
NOT_DEFENCES = {
    "data": ("dataset_name", "data_split", "data_poisoning.discovery"),
    "potion": (*_COMMON, "ieu", "potion", "data_poisoning.discovery"),
}


def family_blocks(family: str) -> tuple[str, ...]:
    """The parameter blocks behind a family's rows (see above)."""
    if family in NOT_DEFENCES:
        return NOT_DEFENCES[family]
    defence = get_defence(family)
    own = (defence.block,) if dataclasses.fields(defence.settings) else ()
    trusted = ("baselines.trusted",) if "trusted" in defence.needs else ()
    return (*_COMMON, *own, *trusted)


def uses_codec(params: dict[str, Any], namespace: str) -> bool:
    """Whether the attack of ``namespace`` hides a code with ISSBA's codec (an unknown
    attack name is left to the parameter checks, which list the valid ones)."""
    trigger = TRIGGERS.get(params[namespace]["attack"].get("name"))
    return bool(trigger and trigger.needs_codec)


def configuration(params: dict[str, Any], namespace: str, family: str) -> dict[str, Any]:
    """Every parameter that produced a ``family`` row of ``namespace``, seed aside."""
    found: dict[str, Any] = {
        "source_images": run_source_data(),
        "attack": params[namespace]["attack"],
    }
    for path in family_blocks(family):
        value: Any = params
        for part in path.split("."):
            value = (value or {}).get(part) if isinstance(value, dict) else None
        found[path] = value
    regime = own_regime(params, namespace)
    if "finetune" in found and regime is not None:
        found["namespace_finetune"] = regime
    if uses_codec(params, namespace):
        found["stega_codec"] = (params.get("data_poisoning") or {}).get("stega_codec")
    if family == "potion":
        if "potion" in params[namespace]:
            found["namespace_potion"] = params[namespace]["potion"]
        if potion_settings(params, namespace).discovery != "realistic":
            found.pop("ieu")
    return found


def own_regime(params: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    """The namespace's own training regime (``<namespace>.finetune``: entries over the
    finetune block), or None where it trains with the shared recipe."""
    return params[namespace].get("finetune")


def potion_settings(params: dict[str, Any], namespace: str) -> PotionConfig:
    """The Potion settings of ``namespace``: ``potion`` with ``<namespace>.potion`` over it."""
    return validate_parameters(params).potion_for(namespace)


@dataclass(frozen=True)
class Replicate:
    """One attack namespace at one seed, as a pipeline template sees it."""

    namespace: str
    seed: int
    params: dict[str, Any]

    @property
    def name(self) -> str:
        return replicate_name(self.namespace, self.seed)

    @property
    def own_recipe(self) -> bool:
        """Whether the namespace has its own training regime (``<namespace>.finetune``)."""
        return own_regime(self.params, self.namespace) is not None

    def key(self, family: str) -> RunKey:
        return RunKey(
            dataset=str(self.params.get("dataset_name", "")),
            namespace=self.namespace,
            attack=str(self.params[self.namespace]["attack"]["name"]),
            seed=self.seed,
            fingerprint=fingerprint(configuration(self.params, self.namespace, family)),
        )


def bound(function, **kwargs):
    """``function`` with keyword arguments fixed, keeping its name for Kedro."""
    return update_wrapper(partial(function, **kwargs), function)


def global_input(name: str, params: dict[str, Any], seed: int) -> str:
    """The dataset a template's global input ``name`` stands for at ``seed``."""
    where = backbone_namespace(params, seed) if name.endswith("backbone") else None
    return f"{where}.{name}" if where else name


def shared_parameters(*names: str) -> dict[str, str]:
    """Parameter mapping that keeps ``params:<name>`` global inside a namespace."""
    return {f"params:{name}": f"params:{name}" for name in names}


def per_namespace(
    template: Callable[[Replicate], Pipeline],
    params: dict[str, Any],
    pipeline_name: str,
    inputs: set[str],
    parameters: dict[str, str],
    extra: tuple[str, ...] = (),
) -> Pipeline:
    """One copy of ``template(replicate)`` per namespace listed in
    ``<pipeline_name>.attacks`` (and in ``extra``: namespaces another pipeline needs this
    one for) and per seed.

    ``inputs`` stay global (shared by every namespace; the backbone per seed where
    ``backbone_per_seed`` is set), ``parameters`` maps template parameters to global ones,
    ``params:namespace.<block>`` is the namespace's ``<namespace>.<block>`` (its
    ``attack``, say); every other dataset is prefixed with ``<namespace>.seed_<s>``.
    """
    names = namespaces(params, pipeline_name)
    names += [ns for ns in extra if ns not in names]
    copies = []
    for ns in names:
        for seed in seeds(params):
            replicate = Replicate(ns, seed, params)
            copy = template(replicate)
            mapping = dict(parameters)
            for name in copy.all_inputs():
                if name.startswith("params:namespace."):
                    mapping[name] = f"params:{ns}.{name.removeprefix('params:namespace.')}"
            copies.append(
                pipeline(
                    copy,
                    namespace=replicate.name,
                    inputs={
                        name: global_input(name, params, seed)
                        for name in inputs
                        if name in copy.all_inputs()
                    },
                    parameters={k: v for k, v in mapping.items() if k in copy.all_inputs()},
                    tags=[pipeline_name, ns, f"seed_{seed}"],
                )
            )
    return Pipeline(copies)  # one construction: summing pipelines one by one is quadratic
