"""How often the report's 95% intervals cover the truth, and how often it claims a difference that is not
there, measured by simulation (the proof behind operator/stilts/stats.py).

Part 1, the interval alone: a mean whose variance is a seed term known to k-1 df plus an item term known
exactly, over every share of the seed term and every share of that term its floor explains (the item x
seed residual, known to many df: 1 is seeds that agree). It compares Welch-Satterthwaite, the fiducial
pivot and the mix the report uses (stats._combine).
Part 2, whole reports: simulated grids (tests/operator/simulated_world.py: 2 backbones x {none, mnli} x
15 languages x 200 items) through report.build, per regime of seed noise, seed count, and null or a
planted interaction.

    .venv/bin/python benchmarks/interval_coverage.py [--replicates 1000] [--draws 4000]

Prints a table and one JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as distributions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stilts import stats  # noqa: E402
from tests.operator.simulated_world import REGIMES, simulate  # noqa: E402

SHARES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
FLOORS = (0.0, 0.5, 1.0)  # share of the seed term that is the item x seed residual (1: seeds agree)


def interval_alone(seeds: int, share: float, floor: float, draws: int, rng: np.random.Generator) -> dict:
    """Coverage at one seed share of the variance, `floor` of that share being the item x seed residual
    (known to many df: seeds that differ only by which items they get right): Welch, the fiducial pivot
    and the report's mix."""
    df = seeds - 1
    ms = share * seeds * rng.chisquare(df, draws) / df   # the per-seed contrasts' mean square
    mean = rng.normal(0.0, 1.0, draws)
    item = 1.0 - share
    residual = share * seeds * floor
    covered = {"welch": 0, "fiducial": 0, "report": 0}
    for m, s in zip(mean, ms):
        total = s / seeds + item
        welch_df = min(total ** 2 / ((s / seeds) ** 2 / df), 1e6) if s > 0 else 1e6
        covered["welch"] += abs(m) <= distributions.t.ppf(0.975, welch_df) * np.sqrt(total)
        ci = stats._combine(float(m), float(s), df, 1 / seeds, residual, item, seeds, stats.ALPHA)
        covered["report"] += ci["low"] <= 0.0 <= ci["high"]
        # The fiducial interval excludes 0 exactly when its p (pClaim, when it is the larger) is below alpha.
        covered["fiducial"] += ci["pClaim"] >= stats.ALPHA
    return {k: v / draws for k, v in covered.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000, help="simulated reports per row (part 2)")
    parser.add_argument("--draws", type=int, default=4000, help="draws per share (part 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, every code path once (the suite runs it)")
    parser.add_argument("--part", choices=["1", "2", "both"], default="both")
    args = parser.parse_args()
    if args.smoke:
        args.draws, args.replicates = 20, 2
    rng = np.random.default_rng(0)
    if args.part in ("1", "both"):
        print(f"Part 1: coverage of a 95% interval by seed share of the variance and the floor's share of that "
              f"({args.draws} draws each)")
        print(f"{'seeds':>5} {'share':>5} {'floor':>5} {'welch':>6} {'fiducial':>8} {'report':>6}")
        for seeds in (2, 3, 5):
            for share in SHARES:
                for floor in FLOORS:
                    row = interval_alone(seeds, share, floor, args.draws, rng)
                    print(f"{seeds:>5} {share:>5.2f} {floor:>5.2f} {row['welch']:>6.3f} {row['fiducial']:>8.3f} "
                          f"{row['report']:>6.3f}", flush=True)
                    print(json.dumps({"part": 1, "seeds": seeds, "share": share, "floor": floor, **row}),
                          file=sys.stderr)
    if args.part in ("2", "both"):
        print(f"\nPart 2: whole reports ({args.replicates} simulated grids per row)")
        print(f"{'regime':<17} {'seeds':>5} {'world':>6} {'accuracy':>8} {'gain':>6} {'paired':>6} {'pooled':>6} "
              f"{'false claims':>12} {'s':>4}")
        for regime, sd in REGIMES.items():
            for seeds in (2, 3, 5):
                for effect in (False, True):
                    start = time.time()
                    r = simulate(seeds, effect, sd, args.replicates)
                    c = r["coverage"]
                    print(f"{regime:<17} {seeds:>5} {'effect' if effect else 'null':>6} {c['accuracy']:>8.3f} "
                          f"{c['gain']:>6.3f} {c['interaction paired']:>6.3f} {c['interaction pooled']:>6.3f} "
                          f"{r['familywise']:>12.3f} {time.time() - start:>4.0f}", flush=True)
                    print(json.dumps({"part": 2, "regime": regime, "seeds": seeds, "effect": effect, **r}),
                          file=sys.stderr)


if __name__ == "__main__":
    main()
