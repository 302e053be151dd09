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


def thetas(effect: bool, tasks: tuple[str, ...] = ("mnli",), size: float | tuple = 0.5) -> dict:
    """Probit-scale ability per arm and language. Both backbones gain 0.1 from each task; with `effect`,
    MoE gains `size` more from the first task on the first five languages (an interaction there, about 12
    points at 0.5, and 3 on the average; none elsewhere, and none for the other tasks). A tuple of sizes
    plants one per task."""
    sizes = size if isinstance(size, tuple) else (size,) + (0.0,) * (len(tasks) - 1)
    first_five = np.arange(len(LANGS)) < 5
    out = {("dense", "none"): np.linspace(1.2, 0.2, len(LANGS))}
    out[("moe", "none")] = out[("dense", "none")]
    for task, planted in zip(tasks, sizes):
        out[("dense", task)] = out[("dense", "none")] + 0.1
        out[("moe", task)] = out[("dense", "none")] + 0.1 + (np.where(first_five, planted, 0.0) if effect else 0.0)
    return out


def truths(effect: bool, sd: dict, tasks: tuple[str, ...] = ("mnli",), size: float = 0.5) -> dict:
    scale = math.sqrt(1 + sum(v * v for v in sd.values()))
    acc = {arm: norm.cdf(t / scale) for arm, t in thetas(effect, tasks, size).items()}
    out = {"accuracy": {f"{b}/{t}": a.mean() for (b, t), a in acc.items()},
           "gain": {f"{b}/{t}": (acc[(b, t)] - acc[(b, "none")]).mean() for b in ("dense", "moe") for t in tasks},
           "interactions": {}}
    for task in tasks:
        per_lang = acc[("moe", task)] - acc[("moe", "none")] - acc[("dense", task)] + acc[("dense", "none")]
        out["interactions"][f"moe-vs-dense/{task}"] = {**dict(zip(LANGS, per_lang)), report.AVG: per_lang.mean()}
    out["interaction"] = out["interactions"][f"moe-vs-dense/{tasks[0]}"]
    return out


def replicate(rng: np.random.Generator, seeds: int, effect: bool, sd: dict, tasks: tuple[str, ...] = ("mnli",),
              size: float = 0.5, first_seed: int = 0) -> report.Inputs:
    n, langs = ITEMS, len(LANGS)
    item = rng.normal(0, sd["item"], n) + rng.normal(0, sd["item_lang"], (langs, n))
    shared = {(b, s): rng.normal(0, sd["seed"]) for b in ("dense", "moe") for s in range(first_seed, first_seed + seeds)}
    runs = []
    for (backbone, task), theta in thetas(effect, tasks, size).items():
        arm_items = item + rng.normal(0, sd["item_arm"], n)
        for s in range(first_seed, first_seed + seeds):
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


def simulate_sequential(design, effect: bool, sd: dict, replicates: int, rng_seed: int = 0,
                        tasks: tuple[str, ...] = ("mnli", "qqp"), size: float = 0.5) -> dict:
    """Replicates of a sequential design, run as the executors run it: each look through answer.take
    (the report's own looks) on the seeds released so far, seeds added while it continues; then the final
    report. Returns the coverage of every comparison's final interval (overall, and by the look it stopped
    at), the share of replicates with any false claim, the mean seeds used, and why they stopped."""
    from stilts import answer

    rng = np.random.default_rng(rng_seed)
    truth = truths(effect, sd, tasks, size)
    covered, by_stop, seeds_used, reasons, false_claims = [], {}, [], {}, 0
    for _ in range(replicates):
        full = replicate(rng, design.max_seeds, effect, sd, tasks, size, first_seed=1)
        looks: list[dict] = []
        while not answer.stopped(looks):
            released = answer.released(design, looks)
            inputs = report.Inputs("sim", "simulation", [r for r in full.runs if r.seed <= released],
                                   design=design, looks=list(looks))
            looks.append(answer.take(inputs, 0.0))
        final = report.build(report.Inputs("sim", "simulation", [r for r in full.runs if r.seed <= looks[-1]["seeds"]],
                                           design=design, looks=looks), tables=False)
        seeds_used.append(looks[-1]["seeds"])
        reasons[looks[-1]["decision"]] = reasons.get(looks[-1]["decision"], 0) + 1
        for key, c in final["answer"]["comparisons"].items():
            hit = c["low"] <= truth["interactions"][key][report.AVG] <= c["high"]
            covered.append(hit)
            by_stop.setdefault(looks[-1]["seeds"], []).append(hit)
        wrong = [(key, lang) for key, lang, sign in report.claims(final)
                 if abs(truth["interactions"][key][lang]) < 1e-12
                 or math.copysign(1, truth["interactions"][key][lang]) != sign]
        false_claims += bool(wrong)
    return {"coverage": float(np.mean(covered)), "familywise": false_claims / replicates,
            "seeds": float(np.mean(seeds_used)), "reasons": {k: v / replicates for k, v in sorted(reasons.items())},
            "coverageByStop": {k: (float(np.mean(v)), len(v)) for k, v in sorted(by_stop.items())},
            "truth": {k: v[report.AVG] for k, v in truth["interactions"].items()}}


def as_cluster(inputs: report.Inputs, items: bool = True) -> report.Inputs:
    """The same runs as `stilts report tx/NAME` reads them: the operator's compact summaries and, with
    `items`, the per-item results it brought home from the pods' logs (stilts_contract.items), through
    report.from_cluster. Without them the report has accuracies and item counts only."""
    from types import SimpleNamespace

    from stilts_contract import items as contract_items

    jobs, results, stored = [], {}, {}
    for i, run in enumerate(inputs.runs):
        h = f"{i:016x}"
        labels = {"backbone": run.backbone, "intermediateTask": run.task, "seed": str(run.seed), "pretraining": ""}
        backbone = SimpleNamespace(model_dump=lambda run=run: {"name": run.backbone, "architecture": run.architecture,
                                                               "model": run.model})
        jobs.append(SimpleNamespace(hash=h, phase="evaluate", backbone=run.backbone, seed=run.seed,
                                    name=f"{run.backbone}-{run.task}-s{run.seed}-evaluate",
                                    job=SimpleNamespace(labels=labels, backbone=backbone)))
        encoded = contract_items.encode(run.correct)
        results[h] = {"test": {lang: v["test"] for lang, v in run.accuracy.items()}, "testItems": ITEMS,
                      "itemsDigest": contract_items.digest(encoded)}
        if items:
            stored[h] = encoded
    seen = SimpleNamespace(name="sim", jobs=jobs, results=results, items=stored, records={})
    return report.from_cluster(seen)


def standard_errors(seeds: int, sd: dict, replicates: int, rng_seed: int = 0) -> dict:
    """The interaction average's printed SE, local and cluster-shaped (with and without the per-item
    results), against its true error: the SD of the estimate over replicates."""
    rng = np.random.default_rng(rng_seed)
    estimates, printed = [], {"local": [], "cluster": [], "cluster without items": []}
    for _ in range(replicates):
        inputs = replicate(rng, seeds, False, sd)
        for kind, source in (("local", inputs), ("cluster", as_cluster(inputs)),
                             ("cluster without items", as_cluster(inputs, items=False))):
            paired = report.build(source)["interaction"]["moe-vs-dense/mnli"]["languages"][report.AVG]["paired"]
            printed[kind].append(paired["se"])
            if kind == "local":
                estimates.append(paired["mean"])
    true = float(np.std(estimates, ddof=1))
    return {"true": true, **{kind: float(np.mean(v)) / true for kind, v in printed.items()}}
