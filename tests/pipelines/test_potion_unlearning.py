import pytest

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.config import ParameterError, with_own_entries
from ieu_potion.pipelines.potion_unlearning.pipeline import create_pipeline
from ieu_potion.pipelines.templating import Replicate, potion_settings
from ieu_potion.unlearning.potion import PotionConfig


def test_a_namespace_entry_overrides_the_shared_potion_block_key_by_key():
    shared = PotionConfig.from_params(
        {"retain_set": "full", "shares": ["share_0.1"], "ptn": {"rho": 0.1, "step": 1.2}}
    )
    own = {"retain_set": "exact", "ptn": {"rho": 0.2}}
    merged = with_own_entries(PotionConfig, shared, own, "ns.potion")
    assert merged.retain_set == "exact" and merged.shares == ("share_0.1",)
    assert (merged.ptn.rho, merged.ptn.step) == (0.2, 1.2)
    assert (shared.retain_set, shared.ptn.rho) == ("full", 0.1), "the shared block is kept"
    assert with_own_entries(PotionConfig, shared, None, "potion") is shared
    with pytest.raises(ParameterError, match=r"ns.potion.ptn.rho: Input should be less than 1"):
        with_own_entries(PotionConfig, shared, {"ptn": {"rho": 2.0}}, "ns.potion")


def test_the_paper_benchmark_namespace_gets_its_own_settings_node_and_fingerprint():
    params, _ = project_config("base")
    params["data_poisoning"]["attacks"] = ["potion_badnet", "badnets_white"]
    params["potion_unlearning"]["attacks"] = ["potion_badnet", "badnets_white"]
    assert params["potion_badnet"]["potion"]["retain_set"] == "exact"
    assert "potion" not in params["badnets_white"]
    pipe = create_pipeline(params)
    assert "params:potion_badnet.potion" in pipe.inputs()
    assert "params:badnets_white.potion" not in pipe.inputs()
    paper = pipe.only_nodes("potion_badnet.seed_0.potion_settings").nodes[0]
    assert paper.inputs == ["params:potion", "params:potion_badnet.potion"]
    assert potion_settings(params, "potion_badnet").retain_set == "exact"
    assert potion_settings(params, "badnets_white").retain_set == "full"
    # the namespace's own entries are part of what produced its rows
    before = Replicate("potion_badnet", 0, params).key("potion").fingerprint
    params["potion_badnet"]["potion"]["retain_set"] = "full"
    assert Replicate("potion_badnet", 0, params).key("potion").fingerprint != before
