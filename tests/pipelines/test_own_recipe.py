"""An attack namespace's own training regime: ``<namespace>.finetune`` entries over the
finetune block, for every model of that namespace and no other."""

import pytest

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.config import ParameterError
from ieu_potion.defences.registry import Task
from ieu_potion.pipelines.baselines.pipeline import create_pipeline as baselines
from ieu_potion.pipelines.ieu_finetune.pipeline import create_pipeline as ieu_finetune
from ieu_potion.pipelines.potion_unlearning.pipeline import create_pipeline as potion
from ieu_potion.pipelines.templating import Replicate
from ieu_potion.schema import validate_parameters

REGIME = {"epochs": 20, "views": ["clean"], "augment": {"translate": 4, "jitter_p": 0.0}}


@pytest.fixture
def params():
    params, _ = project_config("base")
    for block in ("data_poisoning", "ieu_finetune", "baselines", "potion_unlearning"):
        params[block]["attacks"] = ["badnets_white", "wanet"]
    params["wanet"]["finetune"] = REGIME
    return params


def test_the_regime_is_merged_over_the_finetune_block_augment_key_by_key(params):
    checked = validate_parameters(params)
    shared, own = checked.finetune, checked.finetune_for("wanet")
    assert (own.epochs, own.views) == (20, ("clean",))
    assert own.augment == {**shared.augment, "translate": 4, "jitter_p": 0.0}
    assert shared.augment["flip_p"] == 0.0 and own.augment["flip_p"] == 0.0, "kept"
    assert (own.lr, own.weight_decay) == (shared.lr, shared.weight_decay)
    assert checked.finetune_for("badnets_white") == shared


def test_every_model_of_the_namespace_trains_with_it_and_no_other_does(params):
    for pipe in (baselines(params), ieu_finetune(params), potion(params)):
        assert "params:wanet.finetune" in pipe.inputs()
        for node in pipe.nodes:
            if "params:finetune" in node.inputs:
                own = "params:wanet.finetune" in node.inputs
                assert own == node.name.startswith("wanet."), node.name
    key = Replicate("wanet", 2, params).key("none")
    task = Task.of_run(
        None,
        None,
        None,
        None,
        params["finetune"],
        params["wanet"]["attack"],
        key,
        params["wanet"]["finetune"],
    )
    assert (task.recipe.epochs, task.recipe.views) == (20, ("clean",))
    assert task.recipe.seed == params["finetune"]["seed"] + 2, "the run's seed is added"
    assert task.recipe.augment["translate"] == 4


def test_the_regime_is_part_of_what_produced_the_namespace_rows(params):
    before = {f: Replicate("wanet", 0, params).key(f).fingerprint for f in ("none", "potion")}
    other = Replicate("badnets_white", 0, params).key("none").fingerprint
    params["wanet"]["finetune"] = {**REGIME, "epochs": 30}
    for family, fingerprint in before.items():
        assert Replicate("wanet", 0, params).key(family).fingerprint != fingerprint
    assert Replicate("badnets_white", 0, params).key("none").fingerprint == other
    data = Replicate("wanet", 0, params).key("data").fingerprint
    params["wanet"]["finetune"] = REGIME
    assert Replicate("wanet", 0, params).key("data").fingerprint == data, "poison unchanged"


def test_a_bad_entry_names_the_namespace(params):
    params["wanet"]["finetune"] = {"warmup_epochs": 30}
    with pytest.raises(ParameterError, match=r"wanet.finetune: warmup_epochs \(30"):
        validate_parameters(params)
