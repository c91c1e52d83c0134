"""The parameter schema: every bad parameter is refused by one validation pass over the
whole tree, with its path and the valid values, before anything is built or run."""

import copy
import math

import pytest

from ieu_potion.adapters.config_loader import project_config
from ieu_potion.config import ParameterError
from ieu_potion.schema import validate_parameters
from tests.badinput import bad_input, rejects

NAN = math.nan
DELETE = object()


@pytest.fixture(scope="module")
def base():
    return project_config("base")[0]


def changed(params, *edits):
    """A deep copy of ``params`` with each (path, value) set (``DELETE`` removes it)."""
    params = copy.deepcopy(params)
    for path, value in edits:
        keys = path.split(".")
        block = params
        for key in keys[:-1]:
            block = block.setdefault(key, {})
        if value is DELETE:
            del block[keys[-1]]
        else:
            block[keys[-1]] = value
    return params


SHIPPED = ("base", "cifar10", "gtsrb", "vit", "all_attacks", "benchmark", "potion_paper")


def test_every_shipped_environment_validates():
    for env in (*SHIPPED, "potion_paper_gtsrb", "potion_paper_cifar10", "benchmark_gtsrb"):
        params = validate_parameters(project_config(env)[0])
        assert params.seeds == ([0] if env in SHIPPED[:5] else [0, 1, 2])
        assert set(params.data_poisoning.attacks) <= set(params.namespaces())
        # every namespace a pipeline defends is poisoned by the same run
        used = {*params.ieu_finetune.attacks, *params.baselines.attacks}
        assert used | set(params.potion_unlearning.attacks) <= set(params.data_poisoning.attacks)


def test_the_benchmark_covers_every_attack_and_defence_and_the_default_a_quick_subset():
    base = validate_parameters(project_config("base")[0])
    grid = validate_parameters(project_config("benchmark")[0])
    every = set(grid.namespaces())
    assert len(every) == 15 and set(grid.data_poisoning.attacks) == every
    assert set(grid.ieu_finetune.attacks) == set(grid.baselines.attacks) == every
    assert set(grid.baselines.methods) == {"none", "abl", "abl_oracle", "ibau", "attnblock"}
    assert set(base.data_poisoning.attacks) == {"badnets_white"}  # no ISSBA codec
    assert "abl" not in base.baselines.methods and "ibau" in base.baselines.methods
    assert {"none", "eu", "ssd_ptn", "lf_ptn", "xlf_ptn"} <= set(base.potion.methods)
    assert "one_shot" in base.potion.shares and len(base.potion.shares) >= 4
    # the ViT environment exists for the methods that need a ViT robust module
    vit = validate_parameters(project_config("vit")[0])
    assert set(vit.baselines.methods) == {"none", "abl", "ibau", "attnblock"}


def test_the_potion_paper_environments_differ_only_in_their_data():
    """Kedro environments do not share parameter files: the GTSRB and CIFAR-10 copies
    repeat the default-data one, and this keeps them from drifting apart (CIFAR-10 alone
    flips, as the paper does, and has the paper's ResNet-9 widths; the CPU sets half)."""
    configs = {
        name: project_config(f"potion_paper{suffix}")
        for name, suffix in (("cluttered_digits", ""), ("gtsrb", "_gtsrb"), ("cifar10", "_cifar10"))
    }
    flips, widths = {}, {}
    for name, (params, _) in configs.items():
        assert params.pop("dataset_name") == name
        flips[name] = params["finetune"]["augment"].pop("flip_p")
        widths[name] = params["model"]["robust"]["kwargs"].pop("widths")
    assert flips == {"cluttered_digits": 0.0, "gtsrb": 0.0, "cifar10": 0.5}
    half = [32, 64, 128, 64]
    assert widths == {"cluttered_digits": half, "gtsrb": half, "cifar10": [64, 128, 256, 128]}
    digits, gtsrb, cifar = (params for params, _ in configs.values())
    assert digits == gtsrb == cifar
    sources = [catalog["source_images"]["type"] for _, catalog in configs.values()]
    assert len(set(sources)) == 3
    paper = validate_parameters(project_config("potion_paper")[0])
    attacks = {ns: paper.namespaces()[ns].attack for ns in paper.data_poisoning.attacks}
    rates = {ns: attack.rate for ns, attack in attacks.items()}
    assert rates == {"paper_0p2": 0.002, "paper_1": 0.01, "paper_2": 0.02}
    assert {attack.stamp for attack in attacks.values()} == {"after"}
    assert not paper.ieu_finetune.attacks and paper.model.weights.source == "scratch"
    assert paper.model.robust.name == "resnet9"


def test_the_gtsrb_benchmark_is_the_benchmark_grid_on_gtsrbs_data():
    """conf/benchmark_gtsrb copies conf/benchmark's grid and conf/gtsrb's data (Kedro
    environments do not stack); this keeps the copies in step."""
    grid, _ = project_config("benchmark")
    both, catalog = project_config("benchmark_gtsrb")
    gtsrb, gtsrb_catalog = project_config("gtsrb")
    assert catalog["source_images"] == gtsrb_catalog["source_images"]
    assert both["dataset_name"] == gtsrb["dataset_name"] == "gtsrb"
    assert both["potion_badnet"] == gtsrb["potion_badnet"]
    for name in ("dataset_name", "potion_badnet"):
        both.pop(name), grid.pop(name)
    grid.pop("digit_copies", None)
    assert both == grid


@pytest.mark.parametrize("env", ["benchmark", "benchmark_gtsrb"])
def test_a_benchmark_regime_changes_how_its_attacks_train_not_the_attacks(env):
    """The namespaces with their own training regime repeat base's attack blocks (Kedro
    replaces a top-level block whole) and change nothing else of the recipe."""
    base, _ = project_config("base")
    params, _ = project_config(env)
    checked = validate_parameters(params)
    own = [ns for ns, block in checked.namespaces().items() if block.finetune]
    assert "badnets_pattern" in own and "badnets_white" not in own
    for ns in own:
        assert params[ns]["attack"] == base[ns]["attack"], ns
        recipe = checked.finetune_for(ns)
        assert (recipe.lr, recipe.batch_size) == (checked.finetune.lr, checked.finetune.batch_size)


@pytest.mark.parametrize("env", ["local", "cifar10", "gtsrb"])
def test_a_nested_override_keeps_the_rest_of_its_block_in_every_environment(env):
    plain, _ = project_config(env)
    overrides = {"potion": {"ptn": {"rho": 0.25}}, "data_poisoning": {"gallery_examples": 3}}
    params, _ = project_config(env, overrides)
    assert params["potion"]["ptn"]["rho"] == 0.25
    assert params["data_poisoning"]["gallery_examples"] == 3
    plain["potion"]["ptn"]["rho"], plain["data_poisoning"]["gallery_examples"] = 0.25, 3
    assert params == plain


def test_counts_and_defaults_are_read(base):
    params = validate_parameters(changed(base, ("seeds", 3)))
    assert params.seeds == [0, 1, 2]
    assert params.finetune.weight_decay == (0.04, 0.1)
    tiny = validate_parameters(changed(base, ("finetune.base_lr", 2e-5), ("finetune.lr", DELETE)))
    assert tiny.finetune.lr == pytest.approx(2e-5 * 64 / 256)


@bad_input(
    "`ieu.defence.gate_depth` above the depth of the ViT the gate is cut from",
    "ParameterError naming the depth and the model, before the backbone's pretraining",
)
def test_a_gate_deeper_than_its_vit_is_refused(base):
    vit = {
        "name": "vit_tiny_patch16_224",
        "kwargs": {"patch_size": 4, "depth": 2},
        "image_size": 32,
    }
    bad = changed(base, ("model.robust", vit), ("ieu.defence.gate_depth", 3))
    rejects(lambda: validate_parameters(bad), ParameterError, "gate_depth 3", "2 blocks")
    assert (
        validate_parameters(changed(bad, ("ieu.defence.gate_depth", 2))).ieu.defence.gate_depth == 2
    )


@bad_input(
    "`model.weights.source: timm` for a model timm has no weights for (`resnet9`)",
    "ParameterError naming the model and the sources that work, before any download",
)
def test_timm_weights_for_a_model_without_any_are_refused(base):
    bad = changed(
        base,
        ("model.robust", {"name": "resnet9", "kwargs": {}, "image_size": 32}),
        ("model.weights.source", "timm"),
    )
    rejects(lambda: validate_parameters(bad), ParameterError, "'resnet9'", "'scratch'")
    assert validate_parameters(changed(bad, ("model.weights.source", "scratch")))


def test_every_failure_is_listed_at_once(base):
    bad = changed(base, ("finetune.clip", NAN), ("ieu.defence.gate_depth", 0))
    error = rejects(lambda: validate_parameters(bad), ParameterError, "finetune.clip")
    assert "ieu.defence.gate_depth" in str(error)


# (edits, culprits the message must name)
CASES = [
    pytest.param(
        [("finetune.clip", NAN)],
        ["finetune.clip", "finite number"],
        marks=bad_input("`finetune.clip: .nan`", "ParameterError: finetune.clip must be finite"),
    ),
    pytest.param(
        [("finetune.weight_decay", NAN)],
        ["finetune.weight_decay", "finite number"],
        marks=bad_input("`finetune.weight_decay: .nan`", "ParameterError: must be finite"),
    ),
    pytest.param(
        [("potion.ptn.lam", NAN)],
        ["potion.ptn.lam", "finite number"],
        marks=bad_input("`potion.ptn.lam: .nan`", "ParameterError: potion.ptn.lam must be finite"),
    ),
    pytest.param(
        [("potion.ssd_alphas", [NAN])],
        ["potion.ssd_alphas.0", "finite number"],
        marks=bad_input("`potion.ssd_alphas: [.nan]`", "ParameterError naming the list entry"),
    ),
    pytest.param(
        [("finetune.epochs", 2.5)],
        ["finetune.epochs", "valid integer", "2.5"],
        marks=bad_input("`finetune.epochs: 2.5`", "ParameterError: an integer is needed"),
    ),
    pytest.param(
        [("finetune.batch_size", True)],
        ["finetune.batch_size", "valid integer"],
        marks=bad_input("`finetune.batch_size: true`", "ParameterError: an integer is needed"),
    ),
    pytest.param(
        [("finetune.lr", 5.0)],
        ["finetune.lr", "less than or equal to 1"],
        marks=bad_input("`finetune.lr: 5.0`", "ParameterError: lr must lie in (0, 1]"),
    ),
    pytest.param(
        [("finetune.lr", "1e-3")],
        ["finetune.lr", "valid number", "'1e-3'"],
        marks=bad_input("`finetune.lr: '1e-3'` (a string)", "ParameterError: a number is needed"),
    ),
    pytest.param(
        [("finetune.min_lr", 0.5)],
        ["finetune", "min_lr (0.5) must not exceed lr"],
        marks=bad_input("`finetune.min_lr` above `lr`", "ParameterError naming both"),
    ),
    pytest.param(
        [("finetune.schedule", "linear")],
        ["finetune.schedule", "'cosine' or 'constant'"],
        marks=bad_input("`finetune.schedule: linear`", "ParameterError listing cosine, constant"),
    ),
    pytest.param(
        [("finetune.augment", {"flip": 0.5})],
        ["finetune", "unknown augment settings ['flip']", "flip_p"],
        marks=bad_input("an unknown `finetune.augment` key", "ParameterError listing valid keys"),
    ),
    pytest.param(
        [("finetune.epoch", 3)],
        ["finetune.epoch: unknown setting", "valid: augment, batch_size"],
        marks=bad_input("a misspelt key (`finetune.epoch`)", "ParameterError listing valid keys"),
    ),
    pytest.param(
        [("model.robust.name", "resnet_tiny")],
        ["model.robust", "unknown model 'resnet_tiny'", "timm"],
        marks=bad_input("an unknown timm model name", "ParameterError with close matches"),
    ),
    pytest.param(
        [("model.robust.image_size", 4)],
        ["model.robust.image_size", "greater than or equal to 8"],
        marks=bad_input("`model.robust.image_size: 4`", "ParameterError: side in [8, 1024]"),
    ),
    pytest.param(
        [("model.weights.source", "hub")],
        ["model.weights.source", "'pretrain', 'checkpoint', 'timm' or 'scratch'"],
        marks=bad_input("`model.weights.source: hub`", "ParameterError listing the sources"),
    ),
    pytest.param(
        [("model.weights.source", "checkpoint")],
        ["model.weights", "'checkpoint' needs a path"],
        marks=bad_input("weight source `checkpoint` without a path", "ParameterError"),
    ),
    pytest.param(
        [("model.gate_pretrain", {"depth": 0, "train": {"epochs": 1, "batch_size": 8, "lr": 0.1}})],
        ["model.gate_pretrain.depth", "greater than or equal to 1"],
        marks=bad_input("`model.gate_pretrain.depth: 0`", "ParameterError: depth >= 1"),
    ),
    pytest.param(
        [("data_split.pretrain_fraction", 1.0)],
        ["data_split.pretrain_fraction", "less than 1"],
        marks=bad_input("`data_split.pretrain_fraction: 1.0`", "ParameterError: in [0, 1)"),
    ),
    pytest.param(
        [("data_poisoning.discovery.shares", [0.0, 0.5])],
        ["data_poisoning.discovery.shares.0", "greater than 0"],
        marks=bad_input("a discovery share of 0", "ParameterError: shares lie in (0, 1]"),
    ),
    pytest.param(
        [("data_poisoning.discovery.shares", [])],
        ["data_poisoning.discovery.shares", "at least one"],
        marks=bad_input("no discovery share", "ParameterError: name at least one"),
    ),
    pytest.param(
        [("data_poisoning.stega_codec.bits", 0)],
        ["data_poisoning.stega_codec.bits", "greater than or equal to 1"],
        marks=bad_input("`stega_codec.bits: 0`", "ParameterError: bits >= 1"),
    ),
    pytest.param(
        [("data_poisoning.stega_codec.holdout", 1.0)],
        ["data_poisoning.stega_codec.holdout", "less than 1"],
        marks=bad_input("`stega_codec.holdout: 1.0`", "ParameterError: in (0, 1)"),
    ),
    pytest.param(
        [("data_poisoning.stega_codec.epochs", 3)],
        ["data_poisoning.stega_codec.epochs: unknown setting", "steps"],
        marks=bad_input("`stega_codec.epochs` (no such key)", "ParameterError listing valid keys"),
    ),
    pytest.param(
        [("badnets_white.attack.rate", 1.2)],
        ["badnets_white.attack.rate", "less than 1"],
        marks=bad_input("`attack.rate: 1.2`", "ParameterError: rate in (0, 1)"),
    ),
    pytest.param(
        [("badnets_white.attack.count", 4)],
        ["badnets_white.attack", "exactly one of rate, count and target_share"],
        marks=bad_input("`attack.rate` and `attack.count` both", "ParameterError: give one"),
    ),
    pytest.param(
        [("badnets_white.attack.rate", None), ("badnets_white.attack.target_share", 0.5)],
        ["badnets_white.attack", "target_share applies to clean-label attacks (sig)"],
        marks=bad_input("`target_share` on a dirty-label attack", "ParameterError naming sig"),
    ),
    pytest.param(
        [("sig.attack.target_share", 1.5)],
        ["sig.attack.target_share", "less than or equal to 1"],
        marks=bad_input("`sig.attack.target_share: 1.5`", "ParameterError: in (0, 1]"),
    ),
    pytest.param(
        [("badnets_white.attack.rate", None), ("badnets_white.attack.count", 0)],
        ["badnets_white.attack.count", "greater than or equal to 1"],
        marks=bad_input("`attack.count: 0`", "ParameterError: count >= 1"),
    ),
    pytest.param(
        [("badnets_white.attack.target_class", -1)],
        ["badnets_white.attack.target_class", "greater than or equal to 0"],
        marks=bad_input("`attack.target_class: -1`", "ParameterError: class id >= 0"),
    ),
    pytest.param(
        [("blended.attack.name", "blend")],
        ["blended.attack.name", "unknown attack 'blend'", "'badnets_white'", "'issba'"],
        marks=bad_input("an unknown attack name", "ParameterError listing the 15 attacks"),
    ),
    pytest.param(
        [("blended.attack.name", DELETE)],
        ["blended.attack.name", "Field required"],
        marks=bad_input("an attack block without a name", "ParameterError: name required"),
    ),
    pytest.param(
        [("blended.attack.blend", 0.2)],
        ["blended.attack.blend: unknown setting", "settings, stamp, target_class"],
        marks=bad_input("an unknown key in an attack block", "ParameterError listing valid keys"),
    ),
    pytest.param(
        [("blended.attack.settings", {"weight": 2})],
        ["blended.attack", "weight must lie in"],
        marks=bad_input("a trigger setting out of range", "ParameterError from the trigger"),
    ),
    pytest.param(
        [("blended.attack.settings", {"weight": NAN})],
        ["blended.attack", "setting weight must be a finite number"],
        marks=bad_input("a trigger setting `.nan`", "ParameterError: finite number"),
    ),
    pytest.param(
        [("badnets_white.attack.settings", {"patch_size": 2.5})],
        ["badnets_white.attack", "setting patch_size must be an integer"],
        marks=bad_input("a trigger's patch size of 2.5", "ParameterError: an integer"),
    ),
    pytest.param(
        [("ieu.defence.tau", 1.0)],
        ["ieu.defence.tau", "'auto'", "less than 1"],
        marks=bad_input("`ieu.defence.tau: 1.0`", "ParameterError: 'auto' or in (0, 1)"),
    ),
    pytest.param(
        [("ieu.defence.tau", "always")],
        ["ieu.defence.tau", "Input should be 'auto'"],
        marks=bad_input("`ieu.defence.tau: always`", "ParameterError: 'auto' or a number"),
    ),
    pytest.param(
        [("ieu.defence.gate_epoch", "best")],
        ["ieu.defence.gate_epoch", "'consensus', 'last' or 'separation'"],
        marks=bad_input("`ieu.defence.gate_epoch: best`", "ParameterError listing the choices"),
    ),
    pytest.param(
        [("ieu.defence.unlearning_rate", -1)],
        ["ieu.defence.unlearning_rate", "greater than 0"],
        marks=bad_input("`ieu.defence.unlearning_rate: -1`", "ParameterError: 'dynamic' or > 0"),
    ),
    pytest.param(
        [("ieu.defence.min_separation", -1)],
        ["ieu.defence.min_separation", "greater than or equal to 0"],
        marks=bad_input("`ieu.defence.min_separation: -1`", "ParameterError: >= 0"),
    ),
    pytest.param(
        [("ieu.defence.min_contrast", -0.5)],
        ["ieu.defence.min_contrast", "greater than or equal to 0"],
        marks=bad_input("`ieu.defence.min_contrast: -0.5`", "ParameterError: >= 0"),
    ),
    pytest.param(
        [("ieu.gate_training.epochs", 0)],
        ["ieu.gate_training.epochs", "greater than or equal to 1"],
        marks=bad_input("`ieu.gate_training.epochs: 0`", "ParameterError: epochs >= 1"),
    ),
    pytest.param(
        [("potion.methods", ["xlf"])],
        ["potion.methods.0", "'xlf_ptn'", "got 'xlf'"],
        marks=bad_input("an unknown Potion method", "ParameterError listing the methods"),
    ),
    pytest.param(
        [("potion.discovery", "oracle")],
        ["potion.discovery", "'benchmark' or 'realistic'"],
        marks=bad_input("`potion.discovery: oracle`", "ParameterError listing the modes"),
    ),
    pytest.param(
        [("potion.ptn.rho", 1.5)],
        ["potion.ptn.rho", "less than 1"],
        marks=bad_input("`potion.ptn.rho: 1.5`", "ParameterError: in [0, 1)"),
    ),
    pytest.param(
        [("potion.ptn.step", 1.0)],
        ["potion.ptn.step", "greater than 1"],
        marks=bad_input("`potion.ptn.step: 1.0`", "ParameterError: step > 1"),
    ),
    pytest.param(
        [("potion.ptn.max_steps", 2.5)],
        ["potion.ptn.max_steps", "valid integer"],
        marks=bad_input("`potion.ptn.max_steps: 2.5`", "ParameterError: an integer"),
    ),
    pytest.param(
        [("potion.tau", 0.9)],
        ["potion.tau: unknown setting"],
        marks=bad_input("`potion.tau` (the threshold's second source)", "ParameterError: removed"),
    ),
    pytest.param(
        [("potion.eu_shares", ["share_0.25"])],
        ["potion.eu_shares names ['share_0.25']", "available: share_0.1"],
        marks=bad_input("`eu_shares` naming a share not drawn", "ParameterError listing shares"),
    ),
    pytest.param(
        [("potion.tradeoff_shares", ["share_0.7"])],
        ["potion.tradeoff_shares names ['share_0.7']", "share_0.5"],
        marks=bad_input("`tradeoff_shares` naming a share not run", "ParameterError listing them"),
    ),
    pytest.param(
        [("finetune.warmup_epochs", 12.0)],
        ["finetune", "warmup_epochs (12.0) must not exceed epochs (10)"],
        marks=bad_input("`finetune.warmup_epochs` above `epochs`", "ParameterError naming both"),
    ),
    pytest.param(
        [("potion.ptn.parallel", 100_000_000)],
        ["potion.ptn.parallel", "less than or equal to 64"],
        marks=bad_input(
            "`potion.ptn.parallel: 100000000` (a parameter copy per candidate)",
            "ParameterError with the bound",
        ),
    ),
    pytest.param(
        [("potion.shares", ["share_0.05"])],
        ["potion.shares names ['share_0.05']", "one_shot"],
        marks=bad_input("`potion.shares` naming a share not drawn", "ParameterError listing them"),
    ),
    pytest.param(
        [
            ("data_poisoning.attacks", ["badnets_white", "potion_badnet"]),
            ("potion_unlearning.attacks", ["potion_badnet"]),
            ("potion_badnet.potion", {"retain_set": "some"}),
        ],
        ["potion_badnet.potion", "retain_set", "'full' or 'exact'"],
        marks=bad_input("a bad namespace `potion` entry", "ParameterError naming the namespace"),
    ),
    pytest.param(
        [("wanet.finetune", {"epochs": 0})],
        ["wanet.finetune.epochs", "greater than or equal to 1"],
        marks=bad_input("a bad namespace `finetune` entry", "ParameterError naming the namespace"),
    ),
    pytest.param(
        [("wanet.finetune", {"augment": {"translat": 4}})],
        ["wanet.finetune", "unknown augment settings ['translat']", "translate"],
        marks=bad_input(
            "an unknown key in a namespace's `finetune.augment`",
            "ParameterError listing valid keys",
        ),
    ),
    pytest.param(
        [("data_poisoning.attacks", ["badnets_white"]), ("ieu_finetune.attacks", ["sig"])],
        ["ieu_finetune.attacks names ['sig']", "data_poisoning.attacks does not list"],
        marks=bad_input("`ieu_finetune.attacks: [sig]`, sig not poisoned", "ParameterError"),
    ),
    pytest.param(
        [("data_poisoning.attacks", ["badnets_white", "x"])],
        ["lists ['x']", "no '<namespace>.attack' block"],
        marks=bad_input("a listed attack without its block", "ParameterError naming it"),
    ),
    pytest.param(
        [("baselines.methods", [])],
        ["baselines.methods", "at least one"],
        marks=bad_input("`baselines.methods: []`", "ParameterError: name one"),
    ),
    pytest.param(
        [("baselines.methods", ["abl", "abl"])],
        ["baselines.methods", "lists an entry twice"],
        marks=bad_input("a baseline listed twice", "ParameterError"),
    ),
    pytest.param(
        [("baselines.methods", ["ibu"])],
        ["baselines.methods.0", "'ibau'", "got 'ibu'"],
        marks=bad_input("an unknown baseline", "ParameterError listing the defences"),
    ),
    pytest.param(
        [("baselines.ibau.rounds", 2.5)],
        ["baselines.ibau.rounds", "valid integer"],
        marks=bad_input("`baselines.ibau.rounds: 2.5`", "ParameterError: an integer"),
    ),
    pytest.param(
        [("baselines.ibau.max_rms", "big")],
        ["baselines.ibau.max_rms", "valid number"],
        marks=bad_input("`baselines.ibau.max_rms: big`", "ParameterError: a number or null"),
    ),
    pytest.param(
        [("baselines.ibau.K", 5)],
        ["baselines.ibau.K: unknown setting", "fixed_point_iterations"],
        marks=bad_input("`baselines.ibau.K` (no such key)", "ParameterError listing valid keys"),
    ),
    pytest.param(
        [("baselines.abl.isolation_loss", "gla")],
        ["baselines.abl.isolation_loss", "'flooding' or 'lga'"],
        marks=bad_input("`baselines.abl.isolation_loss: gla`", "ParameterError listing both"),
    ),
    pytest.param(
        [("baselines.attnblock.discard_ratio", 1.0)],
        ["baselines.attnblock.discard_ratio", "less than 1"],
        marks=bad_input("`attnblock.discard_ratio: 1.0`", "ParameterError: in [0, 1)"),
    ),
    pytest.param(
        [("baselines.trusted.fraction", 0)],
        ["baselines.trusted.fraction", "greater than 0"],
        marks=bad_input("`baselines.trusted.fraction: 0`", "ParameterError: in (0, 1]"),
    ),
    pytest.param(
        [("seeds", [0, 0])],
        ["seeds", "lists an entry twice"],
        marks=bad_input("`seeds: [0, 0]`", "ParameterError: distinct seeds"),
    ),
    pytest.param(
        [("seeds", [-1])],
        ["seeds", "greater than or equal to 0"],
        marks=bad_input("`seeds: [-1]`", "ParameterError: seeds >= 0"),
    ),
    pytest.param(
        [("seeds", 0)],
        ["seeds", "greater than or equal to 1"],
        marks=bad_input("`seeds: 0` (a count of none)", "ParameterError: count >= 1"),
    ),
    pytest.param(
        [("seeds", "0")],
        ["seeds"],
        marks=bad_input("`seeds: '0'` (a string)", "ParameterError: a list or a count"),
    ),
    pytest.param(
        [("dataset_name", 2024)],
        ["dataset_name", "valid string", "2024"],
        marks=bad_input("`dataset_name: 2024`", "ParameterError before any file is written"),
    ),
    pytest.param(
        [("dataset_name", "../x")],
        ["dataset_name", "pattern"],
        marks=bad_input("`dataset_name: ../x`", "ParameterError: letters, digits, _ . -"),
    ),
    pytest.param(
        [("deterministic", "yes")],
        ["deterministic", "valid boolean"],
        marks=bad_input("`deterministic: yes` (a string)", "ParameterError: true or false"),
    ),
    pytest.param(
        [("finetuen", {"epochs": 3})],
        ["unknown parameter block 'finetuen'"],
        marks=bad_input("a misspelt top-level block", "ParameterError naming it"),
    ),
    pytest.param(
        [("model.robust.kwargs", {"foo": 1})],
        ["model.robust", "cannot be built with kwargs {'foo': 1}", "unexpected keyword"],
        marks=bad_input(
            "`model.robust.kwargs: {foo: 1}` (no such timm argument)",
            "ParameterError naming the model and the argument, from a build on the meta "
            "device, before any work",
        ),
    ),
    pytest.param(
        [("model.gate.kwargs", {"patch_size": 4, "embed_dim": 100, "num_heads": 3})],
        ["model.gate", "embed_dim", "divisible by num_heads"],
        marks=bad_input(
            "`model.gate.kwargs` whose width does not split into its heads",
            "ParameterError naming the gate model, before any work",
        ),
    ),
    pytest.param(
        [("seeds", 10000)],
        ["seeds", "less than or equal to 100"],
        marks=bad_input(
            "`--params seeds=10000` (pipelines too large to build)",
            "ParameterError naming the limit, before any pipeline is built",
        ),
    ),
    pytest.param(
        [("data_poisoning.discovery.shares", [0.1, 0.1000001])],
        ["data_poisoning.discovery.shares", "both make the subset 'share_0.1'"],
        marks=bad_input(
            "discovery shares `[0.1, 0.1000001]` (one subset key, `share_0.1`)",
            "ParameterError naming both shares and the key, before any work",
        ),
    ),
    pytest.param(
        [("datset_name", "cifar")],
        ["unknown parameter 'datset_name'", "did you mean dataset_name"],
        marks=bad_input(
            "`--params datset_name=cifar` (a misspelt top-level string)",
            "ParameterError naming it and the close block name; only `*_root`, `*_path`, "
            "`*_dir`, `*_url` strings pass, as the catalog's paths",
        ),
    ),
    pytest.param(
        [("finetune.device", "banana")],
        ["finetune.device", "'banana' is no torch device"],
        marks=bad_input("`finetune.device: banana`", "ParameterError naming the setting"),
    ),
    pytest.param(
        [("model.weights", {"source": "checkpoint", "path": "no/such/file.safetensors"})],
        ["model.weights", "no file at 'no/such/file.safetensors'"],
        marks=bad_input(
            "`model.weights.source: checkpoint` with a path to no file",
            "ParameterError naming the path, before the backbone is built",
        ),
    ),
    pytest.param(
        [("data_split.pretrain_fraction", 0.0)],
        ["data_split.pretrain_fraction is 0", "model.weights.source 'pretrain'"],
        marks=bad_input(
            "`data_split.pretrain_fraction: 0` with the offline pretraining",
            "ParameterError naming both settings, before any work",
        ),
    ),
]


@pytest.mark.parametrize(("edits", "culprits"), CASES)
def test_bad_parameter_is_refused_by_path(base, edits, culprits):
    bad = changed(base, *edits)
    rejects(lambda: validate_parameters(bad), ParameterError, *culprits)


@pytest.mark.parametrize("name", ["..", "data_poisoning.discovery", "potion.ptn", "a/b", "-x"])
@bad_input(
    "an attack namespace named `..`, `potion.ptn`, `a/b` or `-x` (folder escape, shadowed block)",
    "ParameterError naming it and the characters allowed, before any work",
)
def test_a_namespace_that_could_leave_its_folder_or_shadow_a_block_is_refused(base, name):
    bad = copy.deepcopy(base)
    bad[name] = {"attack": copy.deepcopy(base["badnets_white"]["attack"])}
    bad["data_poisoning"]["attacks"] = [name]
    for block in ("ieu_finetune", "baselines", "potion_unlearning"):
        bad[block]["attacks"] = []
    rejects(lambda: validate_parameters(bad), ParameterError, repr(name), "[A-Za-z0-9]")


# Blocks whose settings class serves this one path: the code's defaults are the values the
# default run ships (one source of defaults; docs/parameters.md shows both). Lists that
# choose what a run covers (namespaces, methods, shares) are the run's choice, no default.
ONE_PATH_BLOCKS = ("ieu.defence", "potion", "baselines", "data_poisoning.stega_codec")
RUN_CHOICES = {"attacks", "methods", "shares", "eu_shares", "tradeoff_shares"}


def shipped_values_unlike_the_code_defaults(settings, shipped, path):
    fields = getattr(type(settings), "__pydantic_fields__", {})
    unlike = []
    for name, value in shipped.items():
        field = fields[name]
        inner = getattr(settings, name)
        if isinstance(value, dict) and hasattr(type(inner), "__pydantic_fields__"):
            unlike += shipped_values_unlike_the_code_defaults(inner, value, f"{path}.{name}")
        elif name not in RUN_CHOICES and not field.is_required():
            default = field.get_default(call_default_factory=True)
            if default != inner:
                unlike.append(f"{path}.{name}: code {default!r}, conf/base {inner!r}")
    return unlike


def test_the_code_defaults_are_what_the_default_run_ships(base):
    params = validate_parameters(base)
    unlike = []
    for path in ONE_PATH_BLOCKS:
        settings, shipped = params, base
        for part in path.split("."):
            settings, shipped = getattr(settings, part), shipped[part]
        unlike += shipped_values_unlike_the_code_defaults(settings, shipped, path)
    assert unlike == []
    # and the check can fail: the paper's tau is not the default
    paper = validate_parameters(changed(base, ("ieu.defence.tau", 0.95)))
    found = shipped_values_unlike_the_code_defaults(paper.ieu.defence, {"tau": 0.95}, "ieu.defence")
    assert found == ["ieu.defence.tau: code 'auto', conf/base 0.95"]
