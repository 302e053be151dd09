"""The report's statistics against values computed by hand (closed forms noted beside each). Coverage
and the false-claim rate are proven by simulation in test_stats_simulation.py."""

import math

import numpy as np
import pytest
from scipy import stats as distributions

from stilts import stats

M = stats.Measure


def arm(values, items=0, vectors=None):
    return {s: M(v, items, None if vectors is None else np.asarray(vectors[s], float)) for s, v in enumerate(values)}


def test_without_items_it_is_student_t():
    # mean 2, sd 1, se 1/sqrt(3); df = 2: t_.975 = 4.302653, and p of t = 2 sqrt(3) is 1 - t / sqrt(t^2 + 2).
    ci = stats.contrast([(1, arm([1.0, 2.0, 3.0]))])
    assert ci["mean"] == 2.0 and ci["df"] == 2
    assert ci["high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=5e-3)
    t = 2 * math.sqrt(3)
    assert ci["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=5e-3)
    assert stats.contrast([(1, arm([0.5]))])["low"] is None


def test_pooled_two_way_interaction_without_items():
    cells = [(1, arm([0.60, 0.62])), (-1, arm([0.50, 0.52])), (-1, arm([0.55, 0.57])), (1, arm([0.50, 0.52]))]
    r = stats.contrast(cells, paired=False)
    # contrast .61 - .51 - .56 + .51 = .05; pooled variance 4 * .0002 / (8 - 4) = .0002 with 4 df,
    # se = sqrt(.0002 * 4 * 1/2) = .02; t_.975 with 4 df is 2.776445; t = 2.5 gives p = .0668.
    assert r["mean"] == pytest.approx(0.05) and r["df"] == 4
    assert r["high"] - r["mean"] == pytest.approx(2.776445 * 0.02, rel=5e-3)
    assert r["p"] == pytest.approx(0.0668, abs=1e-3)


def test_tied_seeds_keep_the_test_sets_noise():
    # Two seeds right on the same 800 of 1000 items: no seed noise at all, and the item term is the whole
    # story: var of the item means / n = .8 * .2 * n/(n-1) / n, a normal interval.
    v = [1] * 800 + [0] * 200
    ci = stats.contrast([(1, arm([0.8, 0.8], 1000, [v, v]))])
    half = 1.959964 * math.sqrt(0.16 * 1000 / 999 / 1000)
    assert ci["high"] - 0.8 == pytest.approx(half, rel=1e-3)
    # Without the items, the binomial bound gives the same here.
    assert stats.contrast([(1, arm([0.8, 0.8], 1000))])["high"] - 0.8 == pytest.approx(1.959964 * math.sqrt(0.16 / 1000), rel=1e-3)


def test_seeds_that_tie_by_chance_are_floored_by_their_item_noise():
    # Same accuracy on different items: the seed mean square is 0, but the residual (seed x item) is not,
    # and it sets a floor under the seed term: the variance is that of the item means over n, all of it,
    # rather than the item term alone.
    rng = np.random.default_rng(0)
    a = (rng.random(1000) < 0.7).astype(float)
    b = a.copy()
    swap = rng.choice(np.flatnonzero(a == 1), 50, replace=False), rng.choice(np.flatnonzero(a == 0), 50, replace=False)
    b[swap[0]], b[swap[1]] = 0, 1
    tied = stats.contrast([(1, arm([a.mean(), b.mean()], 1000, [a, b]))])
    assert tied["seedSd"] == 0 and tied["se"] > tied["itemSe"] > 0
    assert tied["se"] == pytest.approx(math.sqrt(np.var((a + b) / 2, ddof=1) / 1000))


def test_paired_items_see_that_b_never_beats_a():
    # a and b agree on every item except 20 that only a gets right: +2 points on every test set drawn.
    b = [1] * 700 + [0] * 300
    a = [1] * 720 + [0] * 280
    paired = stats.contrast([(1, arm([0.72, 0.72], 1000, [a, a])), (-1, arm([0.70, 0.70], 1000, [b, b]))])
    unpaired = stats.contrast([(1, arm([0.72, 0.72], 1000)), (-1, arm([0.70, 0.70], 1000))])
    assert paired["mean"] == pytest.approx(0.02) and paired["low"] > 0.01
    assert unpaired["low"] < 0 < unpaired["high"]  # the binomial bound cannot see the pairing


def test_claims_use_a_p_never_below_the_intervals():
    """pClaim is the larger of the fiducial p and the interval's: never below p, and above it where two
    seeds carry most of the noise (the fiducial tail is heavier there), so a claim is harder than an
    interval that just excludes 0."""
    rng = np.random.default_rng(4)
    above = 0
    for _ in range(200):
        values = rng.normal(0.02, 0.01, 2)
        ci = stats.contrast([(1, arm(list(values + 0.5), 1000)), (-1, arm([0.5, 0.5], 1000))])
        assert ci["pClaim"] >= ci["p"] - 1e-15
        above += ci["pClaim"] > ci["p"] * 1.01
    assert above > 100, above


def test_the_fiducial_tail_is_the_t_where_the_seeds_carry_all_the_noise_down_to_small_p():
    """With no item term and no floor the fiducial pivot is exactly Student's t: its p must match the t's
    from 0.5 down to 1e-7 (what Holm over several comparisons and the looks of a sequential design ask
    of it), at 1 to 15 df. The equal-probability rule before gave 0.92x the t's p near alpha / 30."""
    for k in (2, 3, 4, 6, 10, 16):
        for target in (0.5, 0.05, 1e-3, 1e-5, 1e-7):
            mean = float(distributions.t.isf(target / 2, k - 1)) / math.sqrt(k)
            ci = stats._combine(mean, 1.0, k - 1, 1 / k, 0.0, 0.0, k, 0.05)
            fiducial = ci["pClaim"]  # the larger of the two tails: with no item term both are the t's
            assert fiducial == pytest.approx(target, rel=1e-3), (k, target, fiducial)


def test_a_run_without_an_item_count_keeps_the_test_sets_noise_in():
    """A cluster run reported by an older trainer has no testItems: it must not drop the item term of a
    contrast whose other runs report theirs."""
    with_counts = stats.contrast([(1, arm([0.8, 0.8], 1000))])
    one_without = stats.contrast([(1, {0: M(0.8, 1000), 1: M(0.8, 0)})])
    assert with_counts["itemSe"] > 0 and one_without["itemSe"] == pytest.approx(with_counts["itemSe"])


def test_holm_adjustment():
    assert stats.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert stats.holm({"a": 0.5, "b": 0.9}) == pytest.approx({"a": 1.0, "b": 1.0})


def test_minimum_detectable_interaction():
    # df = 2: t_.975 = 4.302653 and t_.8 = sqrt(1.125) = 1.060660 (closed forms above)
    assert stats.minimum_detectable(1 / math.sqrt(3), 2) == pytest.approx((4.302653 + 1.060660) / math.sqrt(3), rel=1e-5)
    assert stats.minimum_detectable(None, None) is None
