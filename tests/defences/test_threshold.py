import math

import numpy as np
import pytest

from ieu_potion.defences.threshold import (
    agreement,
    choose_epoch,
    logits,
    otsu_split,
    text_histogram,
)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def two_groups(n_clean=900, n_poison=100, clean_at=-1.0, poison_at=4.0, seed=0):
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.normal(clean_at, 0.5, n_clean), rng.normal(poison_at, 0.3, n_poison)])
    poisoned = np.arange(n_clean + n_poison) >= n_clean
    return sigmoid(z), poisoned


def test_the_cut_falls_in_the_gap_between_a_confident_minority_and_the_bulk():
    conf, poisoned = two_groups()
    split = otsu_split(conf, min_flagged=10)
    assert split.flagged == 100 and split.total == 1000 and split.share == pytest.approx(0.1)
    assert np.array_equal(conf > split.tau, poisoned)
    z = logits(conf)
    # the middle of the gap between the highest clean and the lowest poisoned logit
    assert logits(split.tau) == pytest.approx((z[~poisoned].max() + z[poisoned].min()) / 2)
    # Fisher's ratio: gap 5 between the means, within-group sd about 0.48
    assert 80 < split.separation < 140


def test_the_cut_follows_the_data_not_a_constant():
    """Where the paper needs 0.998 (easy data: clean samples confident too) the cut moves up;
    where poison never reaches 0.95 it moves down: the same rule finds both."""
    easy, poisoned = two_groups(clean_at=3.0, poison_at=8.0)
    hard, _ = two_groups(clean_at=-1.0, poison_at=1.8)
    high, low = otsu_split(easy, 10), otsu_split(hard, 10)
    assert high.tau > 0.99 and np.array_equal(easy > high.tau, poisoned)
    assert low.tau < 0.8 and (hard > low.tau)[poisoned].mean() > 0.95


def test_fisher_ratio_prefers_a_small_tight_group_to_an_even_split():
    tight, _ = two_groups(n_clean=950, n_poison=50)
    rng = np.random.default_rng(1)
    broad = sigmoid(rng.normal(0.0, 2.0, 1000))  # one wide mode: any cut is arbitrary
    assert otsu_split(tight, 10).separation > 10 * otsu_split(broad, 10).separation


def test_the_flagged_group_is_a_minority_of_at_least_min_flagged():
    conf, _ = two_groups(n_clean=300, n_poison=700)  # the confident group is the majority
    split = otsu_split(conf, 10)
    assert split.flagged <= 500
    small, _ = two_groups(n_clean=990, n_poison=10)
    assert otsu_split(small, 20).flagged >= 20
    assert otsu_split(small, 10).flagged == 10


def test_no_cut_where_no_minority_of_the_least_size_can_be_separated():
    assert otsu_split(np.full(100, 0.3), 5) is None  # one value: nowhere to cut
    assert otsu_split(np.array([0.2, 0.9]), 2) is None  # a minority of 2 needs 4 samples
    assert otsu_split(np.array([0.5]), 1) is None
    with pytest.raises(ValueError, match="min_flagged must be >= 1"):
        otsu_split(np.array([0.1, 0.9]), 0)


def test_confidences_of_exactly_one_stay_finite():
    conf = np.concatenate([np.full(90, 0.2), np.full(10, 1.0)]).astype(np.float32)
    split = otsu_split(conf, 5)
    assert split.flagged == 10 and 0.2 < split.tau < 1.0 and math.isfinite(split.separation)


def test_text_histogram_marks_the_bin_holding_tau():
    text = text_histogram(np.array([0.05, 0.15, 0.95, 0.97]), tau=0.93, bins=10)
    assert text.startswith("[0.0,0.1):1 [0.1,0.2):1 [0.2,0.3):0")
    assert text.endswith("[0.9,1.0)*:2")
    assert text_histogram(np.array([0.5]), tau=1.0, bins=2) == "[0.0,0.5):0 [0.5,1.0)*:1"


def test_a_unimodal_gate_flags_nothing_while_a_confident_minority_is_cut():
    """Without a learned trigger the best cut of unimodal confidences separates weakly
    (Fisher's ratio about 7 for a Gaussian): below min_separation, tau is 1 and nothing is
    flagged; two groups pass."""
    from ieu_potion.defences.ieu import IEUConfig, stage_two_tau, usable

    config = IEUConfig.from_params({"tau": "auto"})
    unimodal = sigmoid(np.random.default_rng(0).normal(-1.5, 0.4, 2000))
    weak = otsu_split(unimodal, 64)
    assert weak is not None and weak.separation < config.min_separation
    assert usable(config, weak) is None and stage_two_tau(config, usable(config, weak)) == 1.0
    conf, poisoned = two_groups()
    strong = usable(config, otsu_split(conf, 10))
    assert strong is not None and np.array_equal(conf > stage_two_tau(config, strong), poisoned)
    relaxed = IEUConfig.from_params({"tau": "auto", "min_separation": 0, "min_contrast": 0})
    assert usable(relaxed, weak) is weak


def test_contrast_tells_a_cut_through_one_skewed_crowd_from_a_group_above_it():
    """A skewed crowd with no trigger (log-normal logits) is cut at a Fisher's ratio of
    about 14, above a floor of 10, but its lower part cuts as well: contrast near 1, not
    usable.  The same crowd with a tight confident group above it: the crowd's own best
    cut is about what it was, the whole cut's ratio many times it."""
    from ieu_potion.defences.ieu import IEUConfig, usable

    config = IEUConfig.from_params({"min_separation": 10, "min_contrast": 2})
    rng = np.random.default_rng(0)
    crowd = rng.lognormal(0.0, 0.8, 3000) - 3.0
    skewed = otsu_split(sigmoid(crowd), 64)
    assert skewed.separation > config.min_separation
    assert 0.8 < skewed.contrast < 1.5
    assert usable(config, skewed) is None
    with_poison = sigmoid(np.concatenate([crowd, rng.normal(9.0, 0.3, 300)]))
    cut = otsu_split(with_poison, 64)
    assert (with_poison[3000:] > cut.tau).all() and cut.flagged < 330  # and the crowd's tail
    assert cut.contrast > 5
    assert usable(config, cut) is cut
    # the lower group's best cut is the contrast's denominator, read on that group alone
    lower = with_poison[with_poison <= cut.tau]
    assert cut.contrast == pytest.approx(cut.separation / otsu_split(lower, 64).separation)
    # a lower group with no cut of its own (too few samples for a minority of 64)
    small = sigmoid(np.concatenate([rng.normal(-2.0, 0.3, 100), rng.normal(5.0, 0.3, 70)]))
    assert otsu_split(small, 64).contrast == math.inf


def test_agreement_is_the_mean_jaccard_index_with_the_other_epochs():
    n = 10
    a = np.arange(n) < 4  # flags 0-3
    b = np.arange(n) < 2  # flags 0-1: half of a's
    c = (np.arange(n) >= 2) & (np.arange(n) < 6)  # flags 2-5
    scores = agreement({1: a, 2: b, 3: c})
    assert scores[1] == pytest.approx((2 / 4 + 2 / 6) / 2)
    assert scores[2] == pytest.approx((2 / 4 + 0) / 2)
    assert scores[3] == pytest.approx((2 / 6 + 0) / 2)
    assert agreement({7: a}) == {7: 1.0}
    assert agreement({1: np.zeros(n, bool), 2: np.zeros(n, bool)}) == {1: 1.0, 2: 1.0}


def test_consensus_keeps_an_epoch_that_flags_all_the_poison_not_a_tight_part_of_it():
    """An epoch whose gate is surest of a third of the poison and only half sure of the
    rest cuts off that third with the highest Fisher's ratio of all epochs, leaving the
    other poisoned samples, still confident, on the clean side: ``separation`` keeps it,
    ``consensus`` keeps an epoch that flags the whole group the others flag too."""
    rng = np.random.default_rng(0)
    n_clean, n_poison = 900, 100
    poisoned = np.arange(n_clean + n_poison) >= n_clean
    epochs = {}
    for epoch, seed in ((1, 1), (2, 2), (3, 3)):
        epochs[epoch], _ = two_groups(n_clean, n_poison, seed=seed)
    clean = rng.normal(-1.0, 0.5, n_clean)
    part = np.concatenate([rng.normal(1.2, 0.3, 67), rng.normal(9.0, 0.05, 33)])
    epochs[4] = sigmoid(np.concatenate([clean, part]))
    splits = {e: otsu_split(c, 10) for e, c in epochs.items()}
    assert splits[4].flagged == 33  # the tight third alone
    separation = {e: s.separation for e, s in splits.items()}
    assert max(separation, key=separation.get) == 4
    flags = {e: epochs[e] > splits[e].tau for e in epochs}
    scores = agreement(flags)
    assert choose_epoch("separation", separation, scores) == 4
    kept = choose_epoch("consensus", separation, scores)
    assert kept != 4 and np.array_equal(flags[kept], poisoned)
    with pytest.raises(ValueError, match="unknown gate_epoch rule 'best'"):
        choose_epoch("best", separation, scores)


def test_consensus_breaks_ties_by_separation():
    flags = {1: np.array([True, False]), 2: np.array([True, False])}
    assert choose_epoch("consensus", {1: 30.0, 2: 50.0}, agreement(flags)) == 2
