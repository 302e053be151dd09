"""Group-sequential boundaries: how much of the error rate each look at the seeds may spend.

An experiment that looks at its results after every wave of seeds and stops once its question is
answered must not test each look at the plain 5%: with four looks that claims a difference that is not
there about 13% of the time. An error-spending design (Lan & DeMets 1983) fixes in advance how much of
alpha is spent by each share t of the planned seeds, f(t) with f(0) = 0 and f(1) = alpha; each look
then tests at the nominal level that spends exactly f(t_k) - f(t_(k-1)) given the looks before.
Repeated confidence intervals at those levels (Jennison & Turnbull 1989) cover the truth at every look
at once with probability 1 - alpha, so the interval printed when the experiment stops is valid however
it came to stop (decided, precise enough, or out of seeds).

The statistics are t-like over 2-16 seeds, and successive t statistics are less correlated than the
normal theory's sqrt(n_j / n_k): boundaries from the normal law crossed 6% of the time instead of 5%
over 8 looks from 3 seeds (benchmarks/sequential_design.py). So the boundaries here are those of the
sequential t-test itself (Jennison & Turnbull 1991, "Exact calculations for sequential t, chi2 and F
tests"), whose joint law is free of the unknown SD: computed once per schedule from PATHS simulated
seed sequences with a fixed random stream (deterministic, the same on every machine), then turned back
into each look's nominal two-sided level, which the report's own interval (stats._combine) uses.

The spending function is Hwang, Shih & DeCani's (1990) with gamma = SPENDING_GAMMA: close to Pocock's,
it spends more early than O'Brien-Fleming's would, which is what lets an experiment stop at its first
looks (measured in benchmarks/sequential_design.py against gamma -2 and 3). Pure numbers, no I/O.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats as distributions

SPENDING_GAMMA = 1.0
PATHS = 200_000      # simulated seed sequences: a level's relative error is about 1/sqrt(PATHS x spend)
_STREAM = 20260       # the fixed random stream the boundaries are computed from
_CHUNK = 25_000


def spent(t: float, alpha: float, gamma: float = SPENDING_GAMMA) -> float:
    """The error spent once a share t (0..1) of the planned seeds is in."""
    t = min(max(t, 0.0), 1.0)
    if abs(gamma) < 1e-12:
        return alpha * t
    return alpha * (1 - math.exp(-gamma * t)) / (1 - math.exp(-gamma))


@lru_cache(maxsize=8)
def _t_statistics(sizes: tuple[int, ...]) -> np.ndarray:
    """|T| at each look of PATHS simulated sequences of normal seed results with no effect: looks x PATHS."""
    rng = np.random.default_rng(_STREAM)
    out = np.empty((len(sizes), PATHS), np.float32)
    for start in range(0, PATHS, _CHUNK):
        x = rng.standard_normal((_CHUNK, sizes[-1]))
        sums, squares = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
        for k, n in enumerate(sizes):
            mean = sums[:, n - 1] / n
            var = (squares[:, n - 1] - n * mean * mean) / (n - 1)
            out[k, start:start + _CHUNK] = np.abs(mean) / np.sqrt(var / n)
    return out


@lru_cache(maxsize=4096)
def levels(sizes: tuple[int, ...], cumulative: tuple[float, ...]) -> tuple[float, ...]:
    """Two-sided nominal level of each look: looks after sizes[k] seeds (at least 2, increasing) that may
    have spent cumulative[k] of the error by look k. A look that spends nothing gets level 0."""
    if len(sizes) != len(cumulative) or not sizes:
        raise ValueError("one cumulative spend per look")
    if sizes[0] < 2 or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"looks need at least 2 seeds, increasing: {sizes}")
    t = _t_statistics(tuple(sizes))
    alive = np.ones(t.shape[1], bool)
    out, before = [], 0.0
    for k, (n, total) in enumerate(zip(sizes, cumulative)):
        crossing = int(round((total - before) * PATHS))
        before = max(before, total)
        if crossing <= 0:
            out.append(0.0)
            continue
        values = t[k][alive]
        crossing = min(crossing, len(values))
        c = float(np.partition(values, len(values) - crossing)[len(values) - crossing])
        alive &= t[k] < c
        out.append(float(2 * distributions.t.sf(c, n - 1)))
    return tuple(out)


def schedule(sizes: tuple[int, ...], planned: int, alpha: float, final: bool) -> tuple[float, ...]:
    """Nominal levels of looks after `sizes` seeds of a design planned for `planned` seeds: each interim
    look spends f(n / planned); the final look (the last of `sizes` when `final`) spends what is left.
    One look after every planned seed is the fixed design: its level is alpha."""
    cumulative = [spent(n / planned, alpha) for n in sizes]
    if final:
        cumulative[-1] = alpha
    if len(sizes) == 1 and final:
        return (alpha,)
    return levels(tuple(sizes), tuple(cumulative))
