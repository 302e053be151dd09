"""The report's statistics, as pure functions of numbers.

Every quantity the report prints is a contrast of arms: one arm's accuracy, a gain (task - baseline),
an interaction ((MoE task - MoE base) - (dense task - dense base)). An arm has one run per seed, and
every run is scored on the same test items. What the report estimates is the contrast expected over
seeds *and* over test sets drawn like this one, so two sources of noise count:

- seeds: fine-tuning noise, seen in how runs of one arm differ from seed to seed;
- items: the test set is a sample. All runs share it, so its noise is common to every seed (it does not
  show in the seed-to-seed spread) and it is paired across arms (an item hard for one arm tends to be
  hard for the others).

With the per-item results of every run (the matrix X of seeds x items of the contrast), a two-way
random-effects decomposition X[s, i] = m + item_i + seed_s + residual gives the variance of the mean:

    Var = s2_seeds / k  +  (s2_items - MS_residual / k) / n

(s2_seeds: variance of the seed means; s2_items: of the item means; MS_residual with (k-1)(n-1) df).
Without per-item results (a live cluster report keeps accuracies only), the item term is bounded by
the binomial p(1-p)/n of each arm, which is conservative. The seed term is known to only k-1 degrees of
freedom, and its floor, the item x seed residual, to many; `_combine` turns the two into a t-like
interval whose coverage is measured, not assumed (benchmarks/interval_coverage.py; docs/statistics.md).
A bootstrap is not used: resampling k seeds can never be wider than their range, so with 2-5 seeds it
covers far less than it claims (55-75% at 2 seeds).

Claims (the report's "the gain differs") use a p-value never below the interval's (pClaim), adjusted by
serial gatekeeping over everything the text claims (report._adjust): the comparisons' averages first,
then, only if every average differs, their languages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats as distributions

ALPHA = 0.05
CLAIM_MIN_SEEDS = 3   # per-language claims are held back below this many seeds
FIDUCIAL_WEIGHT_POWER = 0.4  # calibrated by benchmarks/interval_coverage.py (see _combine)
FLOOR_TRUST_POWER = 2  # the seed term's part above (1 - 1/df^2) x its floor is uncertain (see _combine)
# The fiducial tail integrates over the seed mean square's chi2 law. Gauss-Legendre in log-probability on
# these pieces resolves its lower tail (a small draw, a wide normal), which decides small p-values: the
# error against the exact t is below 3e-5 relative from p = 0.5 down to 1e-7, at every df (tests/operator/
# test_stats.py). Equal-probability points (the rule before) gave 0.80-0.94x the t's p near alpha/30.
_PIECES = (1e-14, 1e-11, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 1.0)
_POINTS_PER_PIECE = 24


@dataclass(frozen=True)
class Measure:
    """One run's score on one language (or on the average): accuracy, items, and which were right."""
    accuracy: float
    items: int = 0
    correct: np.ndarray | None = None   # per item: 1/0, or a mean over aligned languages


@lru_cache(maxsize=None)
def _chi2_nodes(df: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature of E[g(U)] for U ~ chi2(df)/df, the fiducial law of a mean square's relative size: nodes
    and weights (summing to 1), in log-probability so that the lower tail is resolved."""
    x, w = np.polynomial.legendre.leggauss(_POINTS_PER_PIECE)
    logs = np.log(np.array(_PIECES))
    nodes, weights = [], []
    for a, b in zip(logs[:-1], logs[1:]):
        t = (b - a) / 2 * x + (a + b) / 2
        nodes.append(np.exp(t))
        weights.append((b - a) / 2 * w * np.exp(t))
    probability, weight = np.concatenate(nodes), np.concatenate(weights)
    return distributions.chi2.ppf(probability, df) / df, weight / weight.sum()


def _combine(mean: float, seed_ms: float, seed_df: int, scale: float, residual: float, item_var: float,
             k: int, alpha: float) -> dict:
    """A t-like interval for a mean whose variance is scale * (seed mean square, known to seed_df degrees of
    freedom, never below the item x seed residual) plus an item term known to many degrees of freedom.

    Two classical answers bracket the truth: Welch-Satterthwaite plugs the estimate into the df and
    undercovers when the seed term dominates (0.87 at 2 seeds); the generalized (fiducial) pivot, which
    averages the normal tail over the seed mean square's chi2 law, overcovers when the terms are
    comparable (0.99). The tail used here mixes the two by the share of the variance that is uncertain,
    weight r^0.4 on the fiducial tail. What is uncertain is the seed mean square's excess over what its
    floor, the residual, already explains: that floor is known to (k-1)(n-1) df, so seeds that agree
    (the seed mean square near the residual) give a nearly normal interval instead of a few-df one. As
    few df cannot tell a small excess from none, only the part above (1 - 1/df^2) x the floor counts: all
    of the seed mean square at 2 seeds (one df: there, seeds that agree and seeds that differ by a lot
    look alike, and the rule before this one was the better compromise), three quarters of the floor is
    trusted at 3 seeds, 94% at 5. Coverage is measured in benchmarks/interval_coverage.py
    (docs/statistics.md).
    p and the interval come from the same tail, so they always agree."""
    seed_var = scale * max(seed_ms, residual)
    total = seed_var + item_var
    out = {"mean": mean, "n": k, "df": seed_df, "seedSd": math.sqrt(seed_ms), "itemSe": math.sqrt(item_var),
           "se": math.sqrt(total)}
    if total <= 0:  # no noise estimated at all: nothing to say beyond the mean
        return {**out, "low": None, "high": None, "p": None}
    nodes, weights = _chi2_nodes(seed_df)
    fiducial_sd = np.sqrt(scale * np.maximum(seed_ms / nodes, residual) + item_var)
    uncertain = scale * max(seed_ms - (1 - 1 / seed_df ** FLOOR_TRUST_POWER) * residual, 0.0)
    welch_df = min(total ** 2 / (uncertain ** 2 / seed_df), 1e6) if uncertain > 0 else 1e6
    weight = (uncertain / total) ** FIDUCIAL_WEIGHT_POWER
    se = out["se"]

    def fiducial(q: float) -> float:
        return float(2 * np.dot(weights, special.ndtr(-q / fiducial_sd)))

    def tail(q: float) -> float:
        return weight * fiducial(q) + (1 - weight) * float(2 * special.stdtr(welch_df, -q / se))

    high = float(special.stdtrit(seed_df, 1 - alpha / 2)) * math.sqrt(scale * seed_ms + item_var) + se
    while tail(high) > alpha:  # the fiducial tail can be heavier than the t's where the floor binds
        high *= 2
    half = optimize.brentq(lambda q: tail(q) - alpha, 0.0, high, xtol=1e-12 * max(se, 1e-12), rtol=1e-10)
    # Claims use the larger of the fiducial p and the interval's: a claim's error rate stays under alpha
    # even where the interval covers a point or two less than 95% (two seeds, seed noise dominant).
    return {**out, "low": mean - half, "high": mean + half, "p": tail(abs(mean)),
            "pClaim": max(fiducial(abs(mean)), tail(abs(mean)))}


def _residual_ms(x: np.ndarray) -> float:
    """Residual mean square of a seeds x items matrix after both main effects (0 with one seed)."""
    k, n = x.shape
    if k < 2:
        return 0.0
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    return float((resid ** 2).sum() / ((k - 1) * (n - 1)))


def _aligned(arms: list[list[Measure]]) -> int:
    """n when every run carries per-item results over the same n items, else 0."""
    lengths = {len(m.correct) if m.correct is not None else -1 for runs in arms for m in runs}
    return lengths.pop() if len(lengths) == 1 and min(lengths) > 1 else 0


def _binomial_items(weights: list[float], arms: list[list[Measure]]) -> float:
    """Item variance bound without per-item results: sum of w^2 p(1-p)/n over arms (arms' items assumed
    positively correlated, as they are), n the smallest item count any run reports (a run that reports
    none, e.g. from an old trainer, does not remove the term); nothing when no run reports one."""
    n = min((m.items for runs in arms for m in runs if m.items > 1), default=0)
    if n < 2:
        return 0.0
    return sum(w * w * p * (1 - p) for w, p in
               ((w, float(np.mean([m.accuracy for m in runs]))) for w, runs in zip(weights, arms))) / n


def contrast(arms: list[tuple[float, dict[int, Measure]]], paired: bool = True, alpha: float = ALPHA) -> dict | None:
    """sum_g w_g * mean accuracy of arm g, with a (1 - alpha) t interval over seeds and items and the
    two-sided p-value of 0.

    paired: seeds are matched across arms (seed s of every arm; seeds missing from any arm are dropped),
    and the seed term is the variance of the per-seed contrasts. Unpaired: every run of every arm
    counts, and the seed term pools the arms' within-arm variances (df = runs - arms)."""
    weights = [w for w, _ in arms]
    if paired:
        seeds = sorted(set.intersection(*(set(runs) for _, runs in arms)))
        if not seeds:
            return None
        table = [[runs[s] for s in seeds] for _, runs in arms]
        per_seed = np.array([sum(w * table[g][j].accuracy for g, w in enumerate(weights)) for j in range(len(seeds))])
        k, mean = len(seeds), float(per_seed.mean())
        if k < 2:
            return {"mean": mean, "low": None, "high": None, "p": None, "n": k, "df": None, "se": None}
        n = _aligned(table)
        residual, item_var = 0.0, _binomial_items(weights, table)
        if n:
            x = sum(w * np.stack([m.correct for m in runs]) for w, runs in zip(weights, table))
            ms = _residual_ms(x)
            residual, item_var = ms / n, max(0.0, float(x.mean(axis=0).var(ddof=1)) - ms / k) / n
        return _combine(mean, float(per_seed.var(ddof=1)), k - 1, 1 / k, residual, item_var, k, alpha)
    table = [list(runs.values()) for _, runs in arms]
    if any(not runs for runs in table):
        return None
    sizes = [len(runs) for runs in table]
    means = [float(np.mean([m.accuracy for m in runs])) for runs in table]
    mean = float(sum(w * m for w, m in zip(weights, means)))
    seed_df = sum(sizes) - len(sizes)
    if seed_df < 1:
        return {"mean": mean, "low": None, "high": None, "p": None, "n": sum(sizes), "df": None, "se": None}
    pooled = sum(float(np.sum((np.array([m.accuracy for m in runs]) - mu) ** 2)) for runs, mu in zip(table, means)) / seed_df
    scale = sum(w * w / s for w, s in zip(weights, sizes))
    n = _aligned(table)
    residual, item_var = 0.0, _binomial_items(weights, table)
    if n:
        matrices = [np.stack([m.correct for m in runs]) for runs in table]
        dfs = [len(x) - 1 for x in matrices]
        ms = sum(_residual_ms(x) * df for x, df in zip(matrices, dfs)) / sum(dfs)
        by_item = sum(w * x.mean(axis=0) for w, x in zip(weights, matrices))
        residual, item_var = ms / n, max(0.0, float(by_item.var(ddof=1)) - ms * scale) / n
    return _combine(mean, pooled, seed_df, scale, residual, item_var, sum(sizes), alpha)


def holm(pvalues: dict) -> dict:
    """Holm's step-down adjustment: family-wise error at most alpha over all the claims made."""
    order = sorted((p, k) for k, p in pvalues.items() if p is not None)
    m = len(order)
    adjusted, running = {}, 0.0
    for i, (p, key) in enumerate(order):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return adjusted


def minimum_detectable(se: float | None, df: float | None, alpha: float = ALPHA, power: float = 0.8) -> float | None:
    """The smallest true contrast a two-sided t-test with this standard error and df detects with the
    given power: (t_{1-alpha/2} + t_{power}) * se."""
    if not se or not df:
        return None
    return float((distributions.t.ppf(1 - alpha / 2, df) + distributions.t.ppf(power, df)) * se)
