import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ieu_potion.data.imageset import ImageSet
from ieu_potion.kernels import reference
from ieu_potion.training.views import ViewMaker
from ieu_potion.unlearning.importance import flat_parameters, importances, load_flat_parameters
from ieu_potion.unlearning.potion import (
    Evaluator,
    PotionConfig,
    realistic_discovery,
    run_potion,
    tradeoff,
)
from ieu_potion.unlearning.ptn import PTNConfig, percent_for, percentile, ptn_search
from tests.badinput import bad_input


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 3))
    rng = np.random.default_rng(0)
    data = ImageSet.clean(
        rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8), rng.integers(0, 3, 10), ["a", "b", "c"]
    )
    # No augmentation, so the expected values can be computed by hand below.
    views = ViewMaker(
        size=(4, 4),
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
    )
    return model, data, views


def expected(model, data, views, loss_fn, reduce):
    x = views(torch.from_numpy(data.images), ("plain",), torch.Generator())["plain"]
    y = torch.from_numpy(data.labels)
    total = torch.zeros(sum(p.numel() for p in model.parameters()))
    for chunk in (slice(0, 4), slice(4, 8), slice(8, 10)):
        model.zero_grad()
        loss_fn(model(x[chunk]), y[chunk]).backward()
        total += reduce(torch.cat([p.grad.reshape(-1) for p in model.parameters()])) / 3
    return total


@pytest.mark.parametrize(
    "kind, loss_fn, reduce",
    [
        ("xlf", lambda z, y: z.norm(dim=1).mean(), torch.abs),
        ("lf", lambda z, y: z.pow(2).sum(1).mean(), torch.abs),
        ("ssd", lambda z, y: nn.functional.cross_entropy(z, y), torch.square),
    ],
)
def test_importances_match_autograd_on_a_tiny_model(kind, loss_fn, reduce):
    model, data, views = tiny()
    got = importances(model, data, kind, views, batch_size=4)
    torch.testing.assert_close(got, expected(model, data, views, loss_fn, reduce))


def test_xlf_and_lf_differ():
    model, data, views = tiny()
    assert not torch.allclose(
        importances(model, data, "xlf", views, 4), importances(model, data, "lf", views, 4)
    )


@pytest.mark.parametrize("p", [0.0, 12.5, 50.0, 97.3, 99.99, 100.0])
def test_percentile_matches_numpy(p):
    values = np.random.default_rng(1).lognormal(size=1001)
    got = percentile(torch.from_numpy(np.sort(values)), p)
    assert got == pytest.approx(np.percentile(values, p))


def test_percent_for_s():
    assert percent_for(0.0) == 100.0
    assert percent_for(0.01) == pytest.approx(100 - np.log(2))


def search_inputs():
    g = torch.Generator().manual_seed(0)
    theta0 = torch.rand(500, generator=g) + 0.5
    i_f = torch.rand(500, generator=g)
    i_r = torch.rand(500, generator=g)
    return theta0, i_f, i_r


@pytest.mark.parametrize("parallel", [1, 3, 8])
def test_search_stops_at_the_first_s_meeting_rho_and_keeps_theta0(parallel):
    theta0, i_f, i_r = search_inputs()
    original = theta0.clone()

    # "accuracy" falls as more mass is dampened away: 1 - removed share of the sum.
    def accuracy(theta):
        return float(theta.sum() / original.sum())

    # no bounds: this search has to dampen a large share of these 500 parameters
    config = PTNConfig(rho=0.9, parallel=parallel, s_start=0.001, min_percentile=1, max_dampened=1)
    result = ptn_search(theta0, i_f, i_r, accuracy, forget_size=10, retain_size=990, config=config)
    assert torch.equal(theta0, original), "theta_0 must never be modified"
    assert result.converged and result.trace[-1]["forget_accuracy"] <= 0.9
    assert all(step["forget_accuracy"] > 0.9 for step in result.trace[:-1])
    s_values = [step["s"] for step in result.trace]
    assert s_values[0] == pytest.approx(0.001)
    np.testing.assert_allclose(np.diff(np.log(s_values)), np.log(1.1), rtol=1e-9)
    assert result.steps == len(result.trace)


def test_search_results_do_not_depend_on_parallelism():
    theta0, i_f, i_r = search_inputs()
    results = [
        ptn_search(
            theta0,
            i_f,
            i_r,
            lambda t: float(t.sum() / theta0.sum()),
            10,
            990,
            PTNConfig(rho=0.8, parallel=k, min_percentile=1, max_dampened=1),
        )
        for k in (1, 5)
    ]
    assert results[0].alpha == results[1].alpha and results[0].steps == results[1].steps
    assert results[0].s == pytest.approx(10 / 1000 / 25 * 1.1 ** (results[0].steps - 1))


def test_search_that_never_converges_leaves_the_model_unchanged():
    theta0, i_f, i_r = search_inputs()
    config = PTNConfig(rho=0.5, max_steps=7, parallel=3)
    result = ptn_search(theta0, i_f, i_r, lambda t: 1.0, 10, 990, config)
    assert not result.converged and result.steps == 7 and len(result.trace) == 7
    assert result.stop == "max_steps"
    assert torch.equal(result.parameters, theta0) and result.alpha == float("inf")


@pytest.mark.parametrize("parallel", [1, 8])
def test_search_gives_up_at_the_percentile_floor(parallel):
    theta0, i_f, i_r = search_inputs()
    config = PTNConfig(min_percentile=99.0, max_dampened=1.0, parallel=parallel)
    result = ptn_search(theta0, i_f, i_r, lambda t: 1.0, 10, 990, config)
    s, expected = 10 / 1000 / 25, 0
    while percent_for(s) >= 99.0:
        s, expected = s * 1.1, expected + 1
    assert result.stop == "min_percentile" and not result.converged
    assert result.steps == expected == 40
    assert min(step["percentile"] for step in result.trace) >= 99.0
    assert torch.equal(result.parameters, theta0)


@pytest.mark.parametrize("parallel", [1, 8])
def test_search_gives_up_before_dampening_more_than_its_share(parallel):
    theta0, i_f, i_r = search_inputs()
    config = PTNConfig(min_percentile=1.0, max_dampened=0.02, parallel=parallel)
    result = ptn_search(theta0, i_f, i_r, lambda t: 1.0, 10, 990, config)
    assert result.stop == "max_dampened" and torch.equal(result.parameters, theta0)
    shares = [step["dampened_share"] for step in result.trace]
    assert max(shares) <= 0.02 and shares == sorted(shares)
    # the candidate the search refused: the next s dampens more than 2%
    s_next = result.trace[-1]["s"] * 1.1
    alpha = percentile(torch.sort(i_f.double() / i_r.double()).values, percent_for(s_next))
    refused = reference.dampen(theta0, i_f, i_r, alpha, 1.0)
    assert (refused != theta0).double().mean() > 0.02


def test_default_bounds_keep_a_hopeless_search_short():
    theta0, i_f, i_r = search_inputs()
    result = ptn_search(theta0, i_f, i_r, lambda t: 1.0, 10, 990, PTNConfig())
    # percentile 95 is s = (e^5 - 1) / 100 = 1.47: 87 steps of 1.1 from s = 4e-4
    assert result.stop == "min_percentile" and result.steps == 87
    assert torch.equal(result.parameters, theta0)


def test_realistic_discovery_reads_only_confidences():
    confidence = np.array([0.2, 0.99, 0.96, 0.5, 0.951])
    assert realistic_discovery(confidence, 0.95)["ieu_gate"].tolist() == [1, 2, 4]
    with pytest.raises(ValueError, match="flags no training sample"):
        realistic_discovery(confidence, 0.995)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"methods": ["xlf"]}, "potion.methods.0: Input should be 'none', .*, got 'xlf'"),
        (
            {"discovery": "oracle"},
            "potion.discovery: Input should be 'benchmark' or 'realistic', got 'oracle'",
        ),
        ({"ptn": {"rho": 1.5}}, "potion.ptn.rho: Input should be less than 1, got 1.5"),
        ({"ptn": {"step": 1.0}}, "potion.ptn.step: Input should be greater than 1, got 1.0"),
        (
            {"ptn": {"min_percentile": 100}},
            "potion.ptn.min_percentile: Input should be less than 100",
        ),
        ({"ptn": {"max_dampened": 0}}, "potion.ptn.max_dampened: Input should be greater than 0"),
        ({"ssd_alphas": [0]}, "potion.ssd_alphas.0: Input should be greater than 0"),
    ],
)
def test_bad_potion_settings_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        PotionConfig.from_params(params)


def test_flat_parameters_round_trip():
    model, _, _ = tiny()
    flat = flat_parameters(model)
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(flat, expected), "the flat vector holds every parameter, in order"
    changed = torch.arange(flat.numel(), dtype=flat.dtype)
    load_flat_parameters(model, changed)
    assert torch.equal(flat_parameters(model), changed)
    first = next(model.parameters())
    assert torch.equal(first.detach().reshape(-1), changed[: first.numel()])
    assert torch.equal(flat, expected), "the earlier vector is a copy, not a view"


@bad_input(
    "a discovered set holding every training sample (realistic discovery flags all)",
    "EU (and SSD/PTN under `retain_set: exact`) skipped on that share with a warning",
)
def test_a_share_without_retain_set_skips_what_needs_one(caplog):
    model, data, views = tiny()
    evaluator = Evaluator(model, views, data, data, target_class=0)

    def retrain(retain):
        pytest.fail("EU must not refinetune on an empty retain set")

    everything = {"realistic": np.arange(len(data))}
    for retain_set, ran in (("exact", {"none"}), ("full", {"none", "ssd_alpha_1"})):
        config = PotionConfig(
            methods=("none", "eu", "ssd"), ssd_alphas=(1.0,), retain_set=retain_set
        )
        with caplog.at_level(logging.WARNING, logger="ieu_potion.unlearning.potion"):
            records, _ = run_potion(model, data, everything, evaluator, views, config, retrain)
        assert {r["method"] for r in records} == ran
        assert "share realistic: eu skipped" in caplog.text


@pytest.mark.parametrize("points, scored", [(0, [0, 1, 2, 3, 4, 5, 6]), (3, [0, 3, 6]), (1, [6])])
def test_the_tradeoff_curve_scores_evenly_spaced_steps_ending_at_the_last(points, scored):
    model, data, views = tiny()
    evaluator = Evaluator(model, views, data, data, target_class=0)
    theta0 = flat_parameters(model)
    imp_f = torch.rand(theta0.numel(), generator=torch.Generator().manual_seed(0))
    imp_r = torch.rand(theta0.numel(), generator=torch.Generator().manual_seed(1))
    alphas = pd.Series([50.0, 20.0, 10.0, 5.0, 2.0, 1.5, 1.0], index=range(7))
    config = PotionConfig(tradeoff_points=points)
    curve = tradeoff(theta0, imp_f, imp_r, alphas, evaluator, config)
    assert list(curve.index) == scored
    for step in scored:  # each scored row is the model dampened at that step's alpha
        theta = reference.dampen(theta0, imp_f, imp_r, torch.tensor([alphas[step]]), 1.0)[0]
        metrics = evaluator.metrics(theta)
        assert curve.loc[step, "clean_accuracy"] == metrics["clean_accuracy"]
