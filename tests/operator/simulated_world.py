"""Simulated grids with a known truth, for proving the report's statistics (tests/operator/
test_stats_simulation.py, benchmarks/interval_coverage.py): each replicate goes through `report.build`
exactly as a real grid does, and `simulate` counts how often each printed 95% interval covers the truth
and how often the report claims a difference that is not there.

The world is a crossed random-effects model on the probit scale, the same shape as XNLI: 15 languages
that are translations of one item set, items that are hard for every arm (and a little more for some),
seed noise per run plus a part shared by a backbone's runs of the same seed, and per-(run, item) noise.
A run's answer on an item is 1[theta + effects + noise > 0], so the true accuracy of an arm, over
seeds and over test sets, is Phi(theta / S) in closed form. Every replicate draws a new test set and new
seeds. With 200 items per language accuracies sit on a 0.5-point grid, so seeds tie often, which is
what made the old report claim p ~ 1e-16.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from stilts import report

LANGS = [f"l{i:02d}" for i in range(15)]
ITEMS = 200
# Probit-scale SDs: item difficulty shared by translations, per language, per arm; seed effects per run,
# and shared by a backbone's runs of one seed. On XNLI the seed-to-seed SD of a run (0.5-1 point on the
# average) is several times the per-item noise, the first regime; the others are where seeds tie.
REGIMES = {"seed noise large": dict(item=1.0, item_lang=0.5, item_arm=0.3, run=0.15, seed=0.1),
           "seed noise small": dict(item=1.0, item_lang=0.5, item_arm=0.3, run=0.04, seed=0.0),
           "no seed noise": dict(item=1.0, item_lang=0.5, item_arm=0.3, run=0.0, seed=0.0)}
ARMS = [("dense", "none"), ("dense", "mnli"), ("moe", "none"), ("moe", "mnli")]


def thetas(effect: bool) -> dict:
    """Probit-scale ability per arm and language. Both backbones gain 0.1 from the task; with `effect`, MoE
    gains 0.6 on the first five languages (an interaction there, about 12 points, and 3 on the average;
    none elsewhere)."""
    base = np.linspace(1.2, 0.2, len(LANGS))
    extra = np.where(np.arange(len(LANGS)) < 5, 0.5, 0.0) if effect else np.zeros(len(LANGS))
    return {("dense", "none"): base, ("dense", "mnli"): base + 0.1,
            ("moe", "none"): base, ("moe", "mnli"): base + 0.1 + extra}


def truths(effect: bool, sd: dict) -> dict:
    scale = math.sqrt(1 + sum(v * v for v in sd.values()))
    acc = {arm: norm.cdf(t / scale) for arm, t in thetas(effect).items()}
    per_lang = acc[("moe", "mnli")] - acc[("moe", "none")] - acc[("dense", "mnli")] + acc[("dense", "none")]
    return {"accuracy": {f"{b}/{t}": a.mean() for (b, t), a in acc.items()},
            "gain": {f"{b}/mnli": (acc[(b, "mnli")] - acc[(b, "none")]).mean() for b in ("dense", "moe")},
            "interaction": {**dict(zip(LANGS, per_lang)), report.AVG: per_lang.mean()}}


def replicate(rng: np.random.Generator, seeds: int, effect: bool, sd: dict) -> report.Inputs:
    n, langs = ITEMS, len(LANGS)
    item = rng.normal(0, sd["item"], n) + rng.normal(0, sd["item_lang"], (langs, n))
    shared = {(b, s): rng.normal(0, sd["seed"]) for b in ("dense", "moe") for s in range(seeds)}
    runs = []
    for (backbone, task), theta in thetas(effect).items():
        arm_items = item + rng.normal(0, sd["item_arm"], n)
        for s in range(seeds):
            latent = theta[:, None] + arm_items + shared[(backbone, s)] + rng.normal(0, sd["run"])
            right = (latent + rng.normal(0, 1, (langs, n)) > 0).astype(np.uint8)
            runs.append(report.Run(backbone=backbone, architecture=backbone, task=task, seed=s, model="m",
                                   accuracy={lang: {"test": float(r.mean())} for lang, r in zip(LANGS, right)},
                                   items={lang: n for lang in LANGS},
                                   correct={lang: (r + 48).tobytes().decode() for lang, r in zip(LANGS, right)}))
    return report.Inputs(experiment="sim", source="simulation", runs=runs)


def simulate(seeds: int, effect: bool, sd: dict, replicates: int, rng_seed: int = 0) -> dict:
    """Coverage of each kind of printed interval, and the share of replicates with any false claim."""
    rng = np.random.default_rng(rng_seed)
    truth = truths(effect, sd)
    hits: dict[str, list[bool]] = {}
    false_claims = 0
    for _ in range(replicates):
        r = report.build(replicate(rng, seeds, effect, sd))
        printed = [("accuracy", k, r["accuracy"][k][report.AVG], truth["accuracy"][k]) for k in truth["accuracy"]]
        printed += [("gain", k, r["gain"][k][report.AVG], truth["gain"][k]) for k in truth["gain"]]
        inter = r["interaction"]["moe-vs-dense/mnli"]["languages"][report.AVG]
        printed += [("interaction paired", "", inter["paired"], truth["interaction"][report.AVG]),
                    ("interaction pooled", "", inter["pooled"], truth["interaction"][report.AVG])]
        for kind, _, ci, true in printed:
            hits.setdefault(kind, []).append(ci["low"] <= true <= ci["high"])
        wrong = [(lang, sign) for _, lang, sign in report.claims(r)
                 if abs(truth["interaction"][lang]) < 1e-12 or math.copysign(1, truth["interaction"][lang]) != sign]
        false_claims += bool(wrong)
    return {"coverage": {k: float(np.mean(v)) for k, v in hits.items()}, "familywise": false_claims / replicates}
