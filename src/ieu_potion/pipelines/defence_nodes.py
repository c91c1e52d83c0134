"""The nodes of any registered defence (``defences/registry.py``) on one attack namespace:
one node per stage of a multi-stage defence (IEU's gate and threshold), then one for its
last step, which writes the model, the history and the results rows.  The baselines and
ieu_finetune pipelines both build their defences here, so a new defence needs no node
code of its own."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import node
from kedro.pipeline.node import Node

from ieu_potion.config import settings_from_params
from ieu_potion.defences.registry import Defence, Task, get_defence, run_defence, run_stage
from ieu_potion.pipelines.templating import Replicate, bound
from ieu_potion.results import RunKey
from ieu_potion.training.setup import ModelBlock

# What every defence's task is made of: node argument -> dataset in the namespace.
TASK_INPUTS = {
    "backbone": "backbone",
    "train": "poisoned_train",
    "clean_test": "clean_test",
    "triggered_test": "triggered_test",
    "finetune_params": "params:finetune",
    "attack": "params:namespace.attack",
}
# The attack namespace's own training regime, where it has one (``<namespace>.finetune``)
OWN_RECIPE = ("own_recipe", "params:namespace.finetune")
# A need of the task -> (node argument, dataset)
NEED_INPUTS = {
    "undefended": ("undefended", "none_model"),
    "trusted": ("trusted", "trusted_images"),
    "models": ("model", "params:model"),
}


def _settings(defence: Defence, root: Any) -> Any:
    """The defence's settings from its block, read below the top-level ``root`` block (the
    validated settings in a run, a mapping from a script)."""
    value: Any = root
    for part in defence.block.split(".")[1:]:
        value = (value or {}).get(part) if isinstance(value, dict) else getattr(value, part)
    return defence.configure(value)


def _task(defence: Defence, key: RunKey, inputs: dict[str, Any]) -> Task:
    """The task from the node's inputs; what is left of ``inputs`` are earlier stages'
    outputs."""
    task = {name: inputs.pop(name) for name in TASK_INPUTS}
    task["own_recipe"] = inputs.pop(OWN_RECIPE[0], None)
    optional = {need: inputs.pop(NEED_INPUTS[need][0]) for need in defence.needs}
    if "models" in optional:
        optional["models"] = settings_from_params(ModelBlock, optional["models"], "model")
    if "gate_backbone" in inputs:
        optional["gate_backbone"] = inputs.pop("gate_backbone")
    return Task.of_run(**task, key=key, **optional)


def stage(method: str, name: str, key: RunKey, settings: dict[str, Any], **inputs: Any):
    """The stage ``name`` of the defence ``method``: its outputs (one, or a tuple)."""
    defence = get_defence(method)
    task = _task(defence, key, inputs)
    made = run_stage(defence, name, task, _settings(defence, settings), **inputs)
    return made[0] if len(made) == 1 else made


def defend(method: str, key: RunKey, settings: dict[str, Any], **inputs: Any):
    """The defence ``method`` (its last step, after the stages the pipeline ran): its
    model (where it makes one), its history and its results rows (CA, ASR, healed,
    seconds, peak memory, its own)."""
    defence = get_defence(method)
    task = _task(defence, key, inputs)
    outcome = run_defence(defence, task, _settings(defence, settings), **inputs)
    rows = key.rows(method, outcome.metrics)
    if defence.makes_model:
        return outcome.model, outcome.history, rows
    return outcome.history, rows


def defence_nodes(method: str, replicate: Replicate, gate_backbone: bool = False) -> list[Node]:
    """The nodes of ``method`` in one replicate; ``gate_backbone``: the run pretrains a
    gate ViT (``model.gate_pretrain``), which the defence's task carries."""
    defence = get_defence(method)
    key = replicate.key(method)
    inputs = dict(TASK_INPUTS, settings=f"params:{defence.block.split('.')[0]}")
    if replicate.own_recipe:
        inputs[OWN_RECIPE[0]] = OWN_RECIPE[1]
    for need in defence.needs:
        argument, dataset = NEED_INPUTS[need]
        inputs[argument] = dataset
    if gate_backbone:
        inputs["gate_backbone"] = "gate_backbone"
    nodes = []
    for step in defence.stages:
        nodes.append(
            node(
                bound(stage, method=method, name=step.name, key=key),
                {**inputs, **{name: name for name in step.inputs}},
                list(step.outputs) if len(step.outputs) > 1 else step.outputs[0],
                name=step.name,
            )
        )
    outputs = [f"{method}_history", f"results_{method}"]
    if defence.makes_model:
        outputs.insert(0, f"{method}_model")
    nodes.append(
        node(
            bound(defend, method=method, key=key),
            {**inputs, **{name: name for name in defence.inputs}},
            outputs,
            name=f"defend_{method}",
        )
    )
    return nodes
