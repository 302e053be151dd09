"""The statistics of the report, as pure functions of numbers (tested against hand-computed values).

Accuracies are fractions in [0, 1]. A run is one seed; its accuracy on a language is measured on n test
items. Two sources of variation matter: which seed (fine-tuning noise) and which items (the test set
is a sample). Intervals combine both by a bootstrap: seeds are resampled, and each drawn seed's
accuracy is redrawn from its items (Binomial(n, p) when only p and n are known, which is exactly the
distribution of an item bootstrap of one accuracy; the actual items when both sides of a difference
carry them, so a paired difference keeps its pairing).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as distributions

ALPHA = 0.05
BOOTSTRAP = 2000


def t_interval(values: list[float], alpha: float = ALPHA) -> dict:
    """Mean with a (1 - alpha) Student-t interval and the two-sided p-value of mean = 0."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "p": None, "n": n, "sd": None}
    sd = float(np.std(values, ddof=1))
    se = sd / math.sqrt(n)
    half = float(distributions.t.ppf(1 - alpha / 2, n - 1)) * se
    p = 1.0 if se == 0 and mean == 0 else (0.0 if se == 0 else float(2 * distributions.t.sf(abs(mean) / se, n - 1)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "p": p, "n": n, "sd": sd}


def _draw(accuracies: np.ndarray, items: np.ndarray, rng: np.random.Generator, seeds: np.ndarray,
          bits: list[np.ndarray] | None) -> np.ndarray:
    """Per bootstrap replicate, the mean over resampled seeds of each seed's resampled accuracy."""
    if bits is None:
        draws = rng.binomial(items[seeds], accuracies[seeds]) / items[seeds]
    else:
        draws = np.empty(seeds.shape)
        for b in range(seeds.shape[0]):
            for j, s in enumerate(seeds[b]):
                draws[b, j] = bits[s][rng.integers(0, len(bits[s]), len(bits[s]))].mean()
    return draws.mean(axis=1)


def bootstrap_accuracy(accuracies: list[float], items: list[int], bits: list[str] | None = None,
                       seed: int = 0, replicates: int = BOOTSTRAP, alpha: float = ALPHA) -> dict:
    """Mean accuracy over seeds with a percentile interval from resampling seeds and items. Always
    inside [0, 1], unlike a t interval on a handful of seeds."""
    rng = np.random.default_rng(seed)
    acc, n = np.asarray(accuracies, float), np.asarray(items, int)
    seeds = rng.integers(0, len(acc), (replicates, len(acc)))
    vectors = [np.frombuffer(b.encode(), np.uint8) - 48 for b in bits] if bits else None
    means = _draw(acc, n, rng, seeds, vectors)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(acc.mean()), "low": float(low), "high": float(high), "n": len(acc)}


def bootstrap_difference(a: list[float], b: list[float], items: list[int], bits_a: list[str] | None = None,
                         bits_b: list[str] | None = None, seed: int = 0, replicates: int = BOOTSTRAP,
                         alpha: float = ALPHA) -> dict:
    """Mean over seeds of a[s] - b[s] (paired by seed) with a percentile interval from resampling
    seeds and items; with both sides' item vectors the same items are drawn for both (paired items)."""
    rng = np.random.default_rng(seed)
    a_, b_, n = np.asarray(a, float), np.asarray(b, float), np.asarray(items, int)
    seeds = rng.integers(0, len(a_), (replicates, len(a_)))
    if bits_a and bits_b:
        va = [np.frombuffer(x.encode(), np.uint8) - 48 for x in bits_a]
        vb = [np.frombuffer(x.encode(), np.uint8) - 48 for x in bits_b]
        diffs = np.empty(seeds.shape)
        for r in range(replicates):
            for j, s in enumerate(seeds[r]):
                pick = rng.integers(0, len(va[s]), len(va[s]))
                diffs[r, j] = va[s][pick].mean() - vb[s][pick].mean()
        means = diffs.mean(axis=1)
    else:
        means = (rng.binomial(n[seeds], a_[seeds]) - rng.binomial(n[seeds], b_[seeds])) / n[seeds]
        means = means.mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": float((a_ - b_).mean()), "low": float(low), "high": float(high), "n": len(a_)}


def pooled_interaction(cells: dict[str, list[float]], alpha: float = ALPHA) -> dict:
    """The two-way (backbone x treatment) interaction contrast from unpaired cells:
    (moe_task - moe_base) - (dense_task - dense_base), its standard error from the variance pooled over
    the four cells (df = N - 4), a t interval and p-value. Uses every seed even where a pairing is
    missing, and does not assume a seed means the same thing on both backbones."""
    keys = ("moe_task", "moe_base", "dense_task", "dense_base")
    groups = [np.asarray(cells[k], float) for k in keys]
    total = sum(len(g) for g in groups)
    means = [g.mean() for g in groups]
    contrast = float(means[0] - means[1] - means[2] + means[3])
    df = total - 4
    if df < 1:
        return {"mean": contrast, "low": None, "high": None, "p": None, "df": df}
    pooled = sum(((g - g.mean()) ** 2).sum() for g in groups) / df
    se = math.sqrt(pooled * sum(1 / len(g) for g in groups))
    half = distributions.t.ppf(1 - alpha / 2, df) * se
    p = float(2 * distributions.t.sf(abs(contrast) / se, df)) if se > 0 else (0.0 if contrast else 1.0)
    return {"mean": contrast, "low": contrast - half, "high": contrast + half, "p": p, "df": df}


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment: family-wise error at most alpha over all the claims made."""
    order = sorted((p, k) for k, p in pvalues.items() if p is not None)
    m = len(order)
    adjusted, running = {}, 0.0
    for i, (p, key) in enumerate(order):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return adjusted


def minimum_detectable(seeds: int, sd: float, alpha: float = ALPHA, power: float = 0.8) -> float | None:
    """The smallest true mean difference a paired two-sided t-test over `seeds` differences of standard
    deviation `sd` detects with the given power: (t_{1-alpha/2} + t_{power}) * sd / sqrt(seeds)."""
    if seeds < 2:
        return None
    df = seeds - 1
    return float((distributions.t.ppf(1 - alpha / 2, df) + distributions.t.ppf(power, df)) * sd / math.sqrt(seeds))
