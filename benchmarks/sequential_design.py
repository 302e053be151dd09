"""The sequential design (spec.answer) measured: its boundaries, its spending function, and whole
experiments simulated through the report's own looks.

Part 1, the boundaries alone: normal seed results with no effect, looks after 3, 4, ..., 10 seeds, each
tested with a t interval at its nominal level. With the normal theory's levels (which assume the
statistics at two looks correlate as sqrt(n_j / n_k)) the design crosses some boundary more often than
alpha; with the sequential t-test's own levels (boundaries.py) it crosses alpha of the time.
Part 2, the spending function: expected seeds and error rates of the design in the same normal model,
for Hwang-Shih-DeCani gamma -2, 1 (the one used) and 3, and what a fixed design with the same
precision needs when it knows the SD.
Part 3, whole experiments: simulated grids (tests/operator/simulated_world.py: 2 backbones x {none,
two tasks} x 15 languages x 200 items) run as the executors run them, each look through answer.take,
seeds added while it continues; coverage of the final intervals (overall and by the look it stopped
at), the share with any false claim, the seeds used, against the fixed design (95%, one look) that
reaches the target on average, measured through report.build too.

    .venv/bin/python benchmarks/sequential_design.py [--part 1|2|3|all] [--replicates 400] [--smoke]

Prints tables and one JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as distributions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stilts import answer, boundaries, report  # noqa: E402
from tests.operator.simulated_world import REGIMES, replicate, simulate_sequential  # noqa: E402


def normal_levels(sizes: tuple[int, ...], cumulative: tuple[float, ...], draws: int = 400_000) -> tuple[float, ...]:
    """Nominal levels from the normal law of the looks' z statistics (what a group-sequential table
    gives), computed on simulated z statistics with the same spending."""
    rng = np.random.default_rng(5)
    z = np.cumsum(rng.standard_normal((draws, sizes[-1])), axis=1)
    stats_at = [np.abs(z[:, n - 1]) / math.sqrt(n) for n in sizes]
    alive, out, before = np.ones(draws, bool), [], 0.0
    for k, total in enumerate(cumulative):
        crossing = int(round((total - before) * draws))
        before = total
        values = stats_at[k][alive]
        c = float(np.partition(values, len(values) - crossing)[len(values) - crossing])
        alive &= stats_at[k] < c
        out.append(float(2 * distributions.norm.sf(c)))
    return tuple(out)


def crossing_rate(sizes, levels, draws: int = 100_000) -> float:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((draws, sizes[-1]))
    crossed = np.zeros(draws, bool)
    for n, level in zip(sizes, levels):
        t = np.abs(x[:, :n].mean(1)) / (x[:, :n].std(1, ddof=1) / math.sqrt(n))
        crossed |= t > distributions.t.isf(level / 2, n - 1)
    return float(crossed.mean())


def part1(smoke: bool) -> None:
    print("Part 1: share of no-effect sequences crossing some look's boundary (alpha 0.05)")
    for planned in ((4,) if smoke else (4, 6, 10)):
        sizes = tuple(range(3, planned + 1))
        cumulative = tuple(boundaries.spent(n / planned, 0.05) for n in sizes[:-1]) + (0.05,)
        rates = {"normal": crossing_rate(sizes, normal_levels(sizes, cumulative, 50_000 if smoke else 400_000),
                                         20_000 if smoke else 100_000),
                 "t": crossing_rate(sizes, boundaries.levels(sizes, cumulative), 20_000 if smoke else 100_000)}
        print(f"  looks after {sizes}: normal levels {rates['normal']:.4f}, sequential t levels {rates['t']:.4f}")
        print(json.dumps({"part": 1, "sizes": sizes, **rates}), file=sys.stderr)


def normal_model(design: answer.Design, gamma: float, effect: float, sd: float, draws: int, seed: int = 0,
                 spend_all_when_precise: bool = False) -> dict:
    """The design on normal per-seed contrasts with t intervals, spending by gamma. With
    `spend_all_when_precise` (an information-based design, not the one used), a look whose interval would
    be within the target if it spent all the error left does so and stops."""
    rng = np.random.default_rng(seed)
    used, decided, covered = [], 0, 0
    for _ in range(draws):
        x = rng.normal(effect, sd, design.max_seeds)
        for looks in range(1, design.most_looks + 1):
            sizes = design.sizes(looks)
            n = sizes[-1]
            cumulative = tuple(boundaries.spent(m / design.max_seeds, 0.05, gamma) for m in sizes)
            if n >= design.max_seeds:
                cumulative = cumulative[:-1] + (0.05,)
            level = boundaries.levels(sizes, cumulative)[-1]
            mean, se = float(x[:n].mean()), float(x[:n].std(ddof=1)) / math.sqrt(n)
            if spend_all_when_precise:
                last = boundaries.levels(sizes, cumulative[:-1] + (0.05,))[-1]
                if float(distributions.t.isf(last / 2, n - 1)) * se <= design.target:
                    level = last
            half = float(distributions.t.isf(level / 2, n - 1)) * se
            if abs(mean) > half or half <= design.target or n >= design.max_seeds:
                used.append(n)
                decided += abs(mean) > half
                covered += abs(mean - effect) <= half
                break
    return {"seeds": float(np.mean(used)), "decided": decided / draws, "coverage": covered / draws}


def part2(smoke: bool) -> None:
    draws = 200 if smoke else 3000
    print(f"\nPart 2: spending functions, normal per-seed contrasts (SD 2 points, target +/-3, looks after 3..10 "
          f"seeds, {draws} draws)")
    design = answer.Design(3.0, first=3, per_look=1, max_seeds=10)
    fixed = next(n for n in range(2, 100) if distributions.t.isf(0.025, n - 1) * 2 / math.sqrt(n) <= 3)
    print(f"  a fixed design that knows the SD needs {fixed} seeds for +/-3")
    print(f"  {'gamma':>5} {'effect':>6} {'seeds':>6} {'decided':>8} {'coverage':>8}")
    for gamma in ((1.0,) if smoke else (-2.0, 1.0, 3.0)):
        for effect in ((0.0,) if smoke else (0.0, 3.0, 6.0)):
            row = normal_model(design, gamma, effect, 2.0, draws)
            print(f"  {gamma:>5g} {effect:>6g} {row['seeds']:>6.2f} {row['decided']:>8.3f} {row['coverage']:>8.3f}")
            print(json.dumps({"part": 2, "gamma": gamma, "effect": effect, **row}), file=sys.stderr)
    print("  information-based (spends all that is left when a look would be precise enough), gamma 1, no effect:")
    for sd, target in (((2.0, 3.0),) if smoke else ((2.0, 3.0), (1.0, 1.0), (4.0, 3.0))):
        row = normal_model(answer.Design(target, 3, 1, 10), 1.0, 0.0, sd, draws, spend_all_when_precise=True)
        print(f"    SD {sd:g}, target {target:g}: seeds {row['seeds']:.2f}, false claims {row['decided']:.3f}")
        print(json.dumps({"part": 2, "informationBased": True, "sd": sd, "target": target, **row}), file=sys.stderr)


def fixed_seeds(target: float, sd: dict, effect: bool, size: float, replicates: int, most: int) -> int | None:
    """The seeds a fixed design (one look, 95%) needs for the target on average, through report.build."""
    rng = np.random.default_rng(3)
    for seeds in range(2, most + 1):
        widths = []
        for _ in range(replicates):
            built = report.build(replicate(rng, seeds, effect, sd, ("mnli", "qqp"), size))
            widths += [(r["languages"][report.AVG]["paired"]["high"] - r["languages"][report.AVG]["paired"]["low"]) / 2
                       for r in built["interaction"].values()]
        if np.mean(widths) <= target:
            return seeds
    return None


ROWS = [  # regime, target (points), effect, planted interaction per task (probit; 1.0 is about 5 points)
    ("seed noise small", 2.7, False, (0.0, 0.0)),
    ("seed noise small", 2.7, True, (1.0, 1.0)),
    ("seed noise small", 2.7, True, (1.0, 0.0)),
    ("seed noise small", 4.0, False, (0.0, 0.0)),
    ("seed noise large", 6.0, False, (0.0, 0.0)),
    ("seed noise large", 6.0, True, (1.5, 1.5)),
]


def part3(replicates: int, smoke: bool) -> None:
    print(f"\nPart 3: whole experiments through the report's looks ({replicates} per row; first 3 seeds, 1 per "
          "look, at most 8; two comparisons, each with its planted effect)")
    print(f"{'regime':<17} {'target':>6} {'world':>6} {'coverage':>8} {'false':>6} {'seeds':>6} {'fixed':>6}  "
          f"{'coverage by the seeds it stopped at':<40} {'s':>4}")
    for regime, target, effect, size in (ROWS[:1] if smoke else ROWS):
        design = answer.Design(target / 100, first=3, per_look=1, max_seeds=8)
        start = time.time()
        r = simulate_sequential(design, effect, REGIMES[regime], replicates, rng_seed=1, size=size)
        fixed = fixed_seeds(target / 100, REGIMES[regime], effect, size, 20 if smoke else 100, 12)
        by_stop = " ".join(f"{n}:{c:.2f}({k})" for n, (c, k) in r["coverageByStop"].items())
        world = "null" if not effect else "both" if all(size) else "first"
        print(f"{regime:<17} {target:>6g} {world:>6} {r['coverage']:>8.3f} "
              f"{r['familywise']:>6.3f} {r['seeds']:>6.2f} {fixed if fixed else '>12':>6}  {by_stop:<40} "
              f"{time.time() - start:>4.0f}", flush=True)
        print(json.dumps({"part": 3, "regime": regime, "target": target, "effect": effect, "size": size,
                          "fixedSeeds": fixed, **r}, default=float), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["1", "2", "3", "all"], default="all")
    parser.add_argument("--replicates", type=int, default=400, help="simulated experiments per row (part 3)")
    parser.add_argument("--smoke", action="store_true", help="small sizes, every code path once (the suite runs it)")
    args = parser.parse_args()
    replicates = 4 if args.smoke else args.replicates
    if args.part in ("1", "all"):
        part1(args.smoke)
    if args.part in ("2", "all"):
        part2(args.smoke)
    if args.part in ("3", "all"):
        part3(replicates, args.smoke)


if __name__ == "__main__":
    main()
