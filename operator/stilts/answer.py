"""The answer, decided: seeds added in waves until every dense-vs-MoE comparison is answered.

A design (spec.answer) runs its first wave of seeds; when every evaluate job of a wave has finished,
the scheduler looks. The look is the report itself (report.build with the design), so what decides
to stop is what the user reads. Each comparison is

- decided: its average crossed its boundary (claims.sequential: Holm over the comparisons, each
  hypothesis with its own error-spending boundaries, alpha passed on when one is rejected, Maurer &
  Bretz 2013), or
- precise enough: its repeated confidence interval (at the look's level, boundaries.py) is no wider
  than the target;

and the experiment stops when every comparison is one or the other ("decided", "precise enough"), or
when the seeds reach the maximum ("budget reached"). Otherwise the next wave's seeds are planned: new
jobs, with new hashes; the jobs that ran keep theirs, so a look never reruns anything.

The looks taken are the experiment's memory (the records ConfigMap on a cluster, answer.json locally),
written with the records in one write, so an executor restarted at any moment neither skips nor
repeats a look: a look is due only when the looks recorded are fewer than the waves planned.

Pure functions of plain values; the executors (local.py, operator.py) read and write the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from scipy import stats as distributions

from . import boundaries

ALPHA = 0.05
STOP_REASONS = ("decided", "precise enough", "budget reached", "nothing to compare")
CONTINUE = "continue"


@dataclass(frozen=True)
class Design:
    target: float      # the 95% half-width that answers a comparison, as a fraction (points / 100)
    first: int
    per_look: int
    max_seeds: int

    @classmethod
    def of(cls, spec) -> "Design | None":
        a = spec.answer
        return None if a is None else cls(a.target_half_width / 100, a.first_seeds, a.seeds_per_look, a.max_seeds)

    def sizes(self, looks: int) -> tuple[int, ...]:
        """Seeds at looks 1..looks."""
        out = [min(self.first, self.max_seeds)]
        while len(out) < looks:
            out.append(min(self.max_seeds, out[-1] + self.per_look))
        return tuple(out)

    @property
    def most_looks(self) -> int:
        return len(range(self.first, self.max_seeds, self.per_look)) + 1

    def levels(self, looks: int, alpha: float = ALPHA) -> tuple[float, ...]:
        """Nominal two-sided level of looks 1..looks (the last one spends what is left when it is at the
        maximum): what each look's intervals and boundaries use."""
        sizes = self.sizes(looks)
        return boundaries.schedule(sizes, self.max_seeds, alpha, final=sizes[-1] >= self.max_seeds)


def fixed_levels(alpha: float = ALPHA) -> tuple[float, ...]:
    """A fixed design looks once, at the end, at the plain level."""
    return (alpha,)


# -- state: the looks taken -------------------------------------------------------------------------

def released(design: Design, looks: list[dict]) -> int:
    """Seeds planned now: the first wave, and a wave more after each look that continued."""
    if not looks:
        return design.sizes(1)[0]
    last = looks[-1]
    return min(design.max_seeds, last["seeds"] + design.per_look) if last["decision"] == CONTINUE else last["seeds"]


def stopped(looks: list[dict]) -> str | None:
    """Why the design stopped, or None while it runs."""
    return looks[-1]["decision"] if looks and looks[-1]["decision"] != CONTINUE else None


def seeds(spec, looks: list[dict] | None = None) -> list[int]:
    """The seeds the plan has now: spec.seeds (fixed design), or 1..released (sequential)."""
    design = Design.of(spec)
    if design is None:
        return list(spec.seeds or _default_seeds())
    return list(range(1, released(design, looks or []) + 1))


def _default_seeds() -> list[int]:
    from .spec import DEFAULT_SEEDS

    return DEFAULT_SEEDS


def due(design: Design | None, looks: list[dict], evaluations_done: bool, planned_seeds: int) -> bool:
    """Whether the scheduler looks now: a design that has not stopped, a wave without its look, a plan that
    holds that wave's seeds (not one made before the last look), and every evaluate job of it finished,
    failed or blocked."""
    if design is None or stopped(looks) or not evaluations_done:
        return False
    wave = released(design, looks)
    return planned_seeds >= wave and (not looks or looks[-1]["seeds"] < wave)


def take(inputs, now: float) -> dict | None:
    """The look that is due, from an executor's report inputs (the looks taken so far in inputs.looks):
    None when the report cannot take it yet (a run of the wave still without results)."""
    from . import report

    looks = report.history(inputs)
    if len(looks) <= len(inputs.looks):
        return None
    # One look at a time, even where the runs on disk allow more (an edited design replaying the waves
    # that ran): each is recorded, and the next is planned from it.
    return compact(looks[len(inputs.looks)], now)


def status(design: Design | None, looks: list[dict]) -> dict | None:
    """What the experiment's status shows of the design: the look, the seeds so far, the widest open
    half-width against the target, each comparison's state, and a one-line summary for kubectl get."""
    if design is None:
        return None
    target = design.target * 100
    if not looks:
        return {"look": 0, "seeds": released(design, looks), "maxSeeds": design.max_seeds,
                "targetHalfWidth": target, "decision": "", "summary": f"first wave of {design.first} seeds"}
    last = looks[-1]
    comparisons = {k: {"halfWidth": None if c.get("halfWidth") is None else round(c["halfWidth"] * 100, 2),
                       "decided": c["decided"]} for k, c in last["comparisons"].items()}
    widths = [c["halfWidth"] for c in comparisons.values() if not c["decided"]]
    widest = None if not widths or None in widths else max(widths)
    if last["decision"] == CONTINUE:
        summary = f"look {last['look']}: +/-{widest:.1f} of {target:g}" if widest is not None else \
            f"look {last['look']}: open"
    else:
        summary = f"{last['decision']} after {last['seeds']} seeds"
    return {"look": last["look"], "seeds": released(design, looks), "maxSeeds": design.max_seeds,
            "targetHalfWidth": target, "halfWidth": widest, "decision": last["decision"],
            "comparisons": comparisons, "summary": summary}


def compact(look: dict, now: float) -> dict:
    """What the state keeps of a look (one of report.history's): its seeds, the decision and each
    comparison's average with its interval."""
    return {"look": look["look"], "seeds": look["seeds"], "decision": look["decision"], "at": round(now, 1),
            "comparisons": {k: {"mean": c["mean"], "low": c["low"], "high": c["high"],
                                "halfWidth": None if c["low"] is None else (c["high"] - c["low"]) / 2,
                                "decided": k in look["claimed"]} for k, c in look["figures"].items()}}


# -- the decision -----------------------------------------------------------------------------------

def decide(design: Design, sizes: tuple[int, ...], comparisons: dict[str, dict]) -> str:
    """The decision at the last of `sizes`' looks from each comparison's {decided, halfWidth}. No
    comparison at all (every baseline of a backbone failed) is a stop: more seeds would not make one."""
    if not comparisons:
        return "nothing to compare"
    if all(c["decided"] for c in comparisons.values()):
        return "decided"
    if all(c["decided"] or (c["halfWidth"] is not None and c["halfWidth"] <= design.target)
           for c in comparisons.values()):
        return "precise enough"
    if sizes[-1] >= design.max_seeds:
        return "budget reached"
    return CONTINUE


def sequential_holm(pvalues: dict, levels: Callable[[float], tuple[float, ...]],
                    alpha: float = ALPHA) -> dict:
    """Holm's procedure over hypotheses that are each tested at several looks (Maurer & Bretz 2013's
    graphical approach with equal weights): every open hypothesis gets alpha / (number open), spent over
    the looks by the design's function; one that crosses its boundary at any look is rejected and its
    share passes to the others, whose boundaries at every look are recomputed with it. pvalues: key ->
    p per look (None where it had none). Returns the rejected keys -> (0-based look where each first
    crossed, the boundary it crossed). With one look this is Holm's step-down."""
    claimed: dict = {}
    while len(claimed) < len(pvalues):
        open_ = [k for k in pvalues if k not in claimed]
        bound = levels(alpha / len(open_))
        new = {}
        for key in open_:
            crossed = [j for j, p in enumerate(pvalues[key]) if p is not None and j < len(bound) and p <= bound[j]]
            if crossed:
                new[key] = (crossed[0], bound[crossed[0]])
        if not new:
            break
        claimed.update(new)
    return claimed


# -- projections and costs --------------------------------------------------------------------------

def half_width(seed_var: float, item_var: float, n: int, level: float) -> float:
    """A t interval's half-width after n seeds, for a per-seed variance and an item term."""
    return float(distributions.t.isf(level / 2, n - 1)) * math.sqrt(seed_var / n + item_var)


def fixed_seeds_for(width: float, seed_var: float, item_var: float, most: int = 200) -> int | None:
    """The seeds a fixed design (one look, 95%) needs for this half-width: None if it never gets there."""
    for n in range(2, most + 1):
        if half_width(seed_var, item_var, n, ALPHA) <= width:
            return n
    return None


def projected_seeds(design: Design, seed_var: float, item_var: float) -> int | None:
    """The seeds at whose look the interval would be as narrow as the target, from measured variances;
    None if not within the design's maximum."""
    for looks in range(1, design.most_looks + 1):
        n = design.sizes(looks)[-1]
        if n >= 2 and half_width(seed_var, item_var, n, design.levels(looks)[-1]) <= design.target:
            return n
    return None


def expected_seeds(design: Design, seed_sd: float, effect: float = 0.0, draws: int = 1000,
                   comparisons: int = 1) -> dict:
    """The design's seeds before any run, for a per-seed SD of the contrast (fraction) and a true effect:
    the mean, and the share of draws per stopping reason. Normal seeds, t intervals, `comparisons`
    independent ones (each must be answered); a fixed random stream, so `stilts plan` prints the same
    figures every time."""
    import numpy as np

    rng = np.random.default_rng(7)
    used, reasons = [], dict.fromkeys(STOP_REASONS, 0)
    for _ in range(draws):
        x = rng.normal(effect, seed_sd, (comparisons, design.max_seeds))
        for looks in range(1, design.most_looks + 1):
            sizes = design.sizes(looks)
            n = sizes[-1]
            found = {}
            for i in range(comparisons):
                seed = x[i, :n]
                se = float(seed.std(ddof=1)) / math.sqrt(n)
                found[str(i)] = (float(seed.mean()), se)
            level = design.levels(looks)[-1]
            bound = design.levels(looks, ALPHA / comparisons)[-1]
            figures = {k: {"decided": se > 0 and 2 * distributions.t.sf(abs(m) / se, n - 1) <= bound,
                           "halfWidth": float(distributions.t.isf(level / 2, n - 1)) * se}
                       for k, (m, se) in found.items()}
            decision = decide(design, sizes, figures)
            if decision != CONTINUE:
                used.append(n)
                reasons[decision] += 1
                break
    return {"mean": float(np.mean(used)), "most": design.max_seeds,
            "reasons": {k: v / draws for k, v in reasons.items()}}


def job_costs(jobs, records: dict) -> list[dict]:
    """Each job of a cluster experiment as a cost: the wall time of all its attempts (creation to end) on
    its GPUs, or, when no job has any, on its CPU request."""
    gpus = any(job.launch.gpus for job in jobs)
    out = []
    for job in jobs:
        rec = records.get(job.hash, {})
        seconds = rec.get("seconds")  # every attempt's wall time (reconcile adds each as it ends)
        if not seconds:
            continue
        cpu = job.launch.cpu
        cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu or 1)
        devices = job.launch.gpus * job.launch.workers if gpus else cores * job.launch.workers
        out.append({"seed": job.seed, "hours": seconds / 3600, "devices": devices,
                    "unit": "GPU-hours" if gpus else "CPU-hours"})
    return out


def cost(jobs: list[dict], seeds_used: list[int]) -> dict | None:
    """What the runs cost, from each job's {seed, hours, devices, unit}: device-hours spent, and split
    into what every seed costs on average and what all seeds share (pretraining, prefetch)."""
    if not jobs:
        return None
    unit = jobs[0]["unit"]
    total = sum(j["hours"] * j["devices"] for j in jobs)
    shared = sum(j["hours"] * j["devices"] for j in jobs if j.get("seed") is None)
    per_seed = (total - shared) / len(seeds_used) if seeds_used else 0.0
    return {"unit": unit, "spent": total, "shared": shared, "perSeed": per_seed, "seeds": len(seeds_used)}
