"""The report's statistics against values computed by hand (closed forms noted beside each)."""

import math

import pytest

from stilts import stats


def test_t_interval_and_p_value():
    # mean 2, sd 1, se 1/sqrt(3); df = 2: t_.975 = sqrt(18.5128...) = 4.3027 (from F(t) = 1/2 + t / (2 sqrt(t^2 + 2)))
    ci = stats.t_interval([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["sd"] == pytest.approx(1.0)
    assert ci["high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    t = 2 / (1 / math.sqrt(3))
    assert ci["p"] == pytest.approx(2 * (0.5 - t / (2 * math.sqrt(t * t + 2))), rel=1e-6)
    assert stats.t_interval([0.5])["low"] is None


def test_pooled_two_way_interaction():
    cells = {"moe_task": [0.60, 0.62], "moe_base": [0.50, 0.52], "dense_task": [0.55, 0.57], "dense_base": [0.50, 0.52]}
    r = stats.pooled_interaction(cells)
    # contrast .61 - .51 - .56 + .51 = .05; every cell's sum of squares .0002, pooled 4 * .0002 / (8 - 4) = .0002,
    # se = sqrt(.0002 * 4 * 1/2) = .02; t_.975 with 4 df is 2.776445.
    assert r["mean"] == pytest.approx(0.05) and r["df"] == 4
    assert r["high"] - r["mean"] == pytest.approx(2.776445 * 0.02, rel=1e-5)
    assert r["p"] == pytest.approx(0.0668, abs=5e-4)  # t = 2.5 with 4 df


def test_holm_adjustment():
    assert stats.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert stats.holm({"a": 0.5, "b": 0.9}) == pytest.approx({"a": 1.0, "b": 1.0})


def test_minimum_detectable_interaction():
    # df = 2: t_.975 = 4.302653 and t_.8 = sqrt(1.125) = 1.060660 (closed forms above)
    assert stats.minimum_detectable(3, 1.0) == pytest.approx((4.302653 + 1.060660) / math.sqrt(3), rel=1e-5)
    assert stats.minimum_detectable(10, 1.0) < stats.minimum_detectable(3, 1.0) / 2
    assert stats.minimum_detectable(1, 1.0) is None


def test_accuracy_intervals_stay_in_bounds_and_match_the_binomial():
    near_one = stats.bootstrap_accuracy([0.99, 1.0, 0.98], [100, 100, 100])
    assert 0 <= near_one["low"] <= near_one["mean"] <= near_one["high"] <= 1.0
    one = stats.bootstrap_accuracy([0.8], [1000], replicates=4000)
    half = 1.96 * math.sqrt(0.8 * 0.2 / 1000)  # the normal approximation of an item bootstrap
    assert one["low"] == pytest.approx(0.8 - half, abs=0.004) and one["high"] == pytest.approx(0.8 + half, abs=0.004)
    bits = "1" * 800 + "0" * 200
    assert stats.bootstrap_accuracy([0.8], [1000], [bits], replicates=4000)["low"] == pytest.approx(0.8 - half, abs=0.004)


def test_a_paired_item_bootstrap_sees_that_b_never_beats_a():
    # a and b agree on every item except 20 that only a gets right: a - b is +2 points on every resample.
    b = "1" * 700 + "0" * 300
    a = "1" * 720 + "0" * 280
    paired = stats.bootstrap_difference([0.72, 0.72], [0.70, 0.70], [1000, 1000], [a, a], [b, b])
    unpaired = stats.bootstrap_difference([0.72, 0.72], [0.70, 0.70], [1000, 1000])
    assert paired["mean"] == pytest.approx(0.02) and paired["low"] > 0
    assert unpaired["low"] < paired["low"]
