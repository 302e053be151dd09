"""Report: XNLI accuracy per (backbone, intermediate task) and language, the gain over each backbone's
baseline, and the research question as an interaction: gain(MoE) - gain(dense).

Inputs come from any of three places, read into the same `Inputs`:
- a run directory (`stilts run`'s, or a copy of an experiment's directory on the cluster volume): the
  job directories' job.json, results.json and metrics.json; plan.json or the spec says what is missing;
- a live experiment (`stilts report tx/NAME`): the plan recomputed from its spec and the results the
  operator keeps (stats.py explains what differs without per-item results).

Statistics (stats.py): every interval is a t interval over seeds and the shared test items; the
interaction both paired by seed and as a pooled two-way contrast. The claims the text makes are
adjusted by serial gatekeeping (each comparison's average, then its languages from 3 seeds on). With a
sequential design (spec.answer, answer.py) the report is also the look: every interval is at the level
its look may spend, claims are tested against each look's boundaries, and it says why the design
stopped and what the answer cost.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stilts_contract import items as contract_items, tasks as contract_tasks
from stilts_contract.names import BASELINE, COMPLETE, MLM_ARM, plain_task

from . import answer, stats

AVG = "avg"
METHOD = "over seeds and the shared test items' sampling noise; see docs/statistics.md"
CONSTANT_SHARE = 0.95   # a language whose predictions put this share on one label is flagged
ASSUMED_SEED_SD = 1.0   # points: seed-to-seed SD of a gain difference on XNLI, before any run (see README)


@dataclass
class Run:
    """One evaluate job: a run's zero-shot accuracy per language."""
    backbone: str
    architecture: str
    task: str
    seed: int
    model: str = ""
    pretraining: str = ""                       # continued masked-LM before the run's first phase, if any
    accuracy: dict = field(default_factory=dict)  # language -> {"dev": f, "test": f}
    items: dict = field(default_factory=dict)     # language -> test items
    correct: dict = field(default_factory=dict)   # language -> "0101..." per test item (when kept)
    predicted: dict = field(default_factory=dict)  # language -> share of each label
    _vectors: dict = field(default_factory=dict, repr=False, compare=False)

    def vector(self, lang: str) -> np.ndarray | None:
        """Which test items the run got right, as 0/1 (decoded once)."""
        if lang not in self._vectors:
            bits = self.correct.get(lang)
            self._vectors[lang] = (np.frombuffer(bits.encode(), np.uint8) - 48).astype(float) if bits else None
        return self._vectors[lang]

    def average_vector(self) -> np.ndarray | None:
        """Each test item's share of languages right, when every language has the same items (XNLI's are
        translations of one set); computed once."""
        if AVG not in self._vectors:
            vectors = [self.vector(k) for k in sorted(self.accuracy)]
            aligned = bool(vectors) and all(v is not None for v in vectors) and len({len(v) for v in vectors}) == 1
            self._vectors[AVG] = np.mean(vectors, axis=0) if aligned else None
        return self._vectors[AVG]


@dataclass
class Inputs:
    experiment: str
    source: str
    runs: list[Run]
    missing: list[str] = field(default_factory=list)
    missing_seeds: list[int] = field(default_factory=list)  # seeds of evaluate jobs still to give results
    planned_seeds: int | None = None  # the most seeds the plan holds now (None: whatever the runs show)
    alignment: dict = field(default_factory=dict)  # backbone -> {"mean": f, "byLanguage": {...}}
    labels: list[str] = field(default_factory=lambda: ["entailment", "neutral", "contradiction"])
    design: "answer.Design | None" = None        # spec.answer's, when the experiment runs one
    looks: list[dict] = field(default_factory=list)  # the looks taken (answer.py), when known
    costs: list[dict] = field(default_factory=list)  # per finished job: {seed, hours, devices, unit}


def _run_from(labels: dict, backbone: dict, results: dict) -> Run:
    langs = results.get("languages", {})
    correct = results.get("correct") or {}
    items = {lang: len(correct[lang]) if lang in correct else results.get("testItems", 0) for lang in langs}
    return Run(backbone=labels.get("backbone", backbone.get("name", "")), architecture=backbone.get("architecture", "dense"),
               task=labels.get("intermediateTask") or BASELINE, seed=int(labels.get("seed") or 0),
               model=backbone.get("model", ""), pretraining=labels.get("pretraining", ""),
               accuracy=langs, items=items, correct=correct, predicted=results.get("predicted") or {})


def from_directory(directory: str | Path, planned: list | None = None, design=None) -> Inputs:
    """A run directory: `stilts run`'s, or a copy of the experiment's directory from the volume. The
    job directories say what finished; plan.json (or `planned`, from the spec) says what is missing;
    answer.json the looks a sequential design took (`design`, or the one answer.json names)."""
    directory = Path(directory)
    manifest = directory / "plan.json"
    rows = json.loads(manifest.read_text())["jobs"] if manifest.is_file() else []
    where = {r["hash"]: Path(r["directory"]) for r in rows}
    # Evaluate jobs that failed for good are missing too, but no look waits for them.
    evaluations = {r["hash"]: (r["name"], None if r.get("status") in ("Failed", "Blocked") else
                               _seed(r.get("labels", {}))) for r in rows if r["phase"] == "evaluate"}
    evaluations.update({j.hash: (j.name, j.seed) for j in planned or [] if j.phase == "evaluate"})
    for job_json in directory.glob("*/job.json"):
        where.setdefault(job_json.parent.name, job_json.parent)
    inputs = Inputs(experiment=directory.name, source=str(directory), runs=[])
    state = directory / ANSWER_FILE
    if state.is_file():
        saved = json.loads(state.read_text())
        inputs.looks = saved.get("looks", [])
        design = design or (answer.Design(**saved["design"]) if saved.get("design") else None)
    inputs.design = design
    inputs.costs = [c for r in rows if (c := _local_cost(r))]
    for job_hash, path in sorted(where.items()):
        path = path if path.is_dir() else directory / job_hash
        if not (path / "job.json").is_file():
            continue
        job = json.loads((path / "job.json").read_text())
        complete = (path / COMPLETE).is_file()
        if job["phase"] == "pretrain" and complete and (path / "metrics.json").is_file():
            metrics = json.loads((path / "metrics.json").read_text())
            if "alignment" in metrics:
                inputs.alignment[job["backbone"]["name"]] = {"mean": metrics["alignment"],
                                                             "byLanguage": metrics.get("alignmentByLanguage", {})}
        if job["phase"] != "evaluate":
            continue
        if complete and (path / "results.json").is_file():
            inputs.runs.append(_run_from(job.get("labels", {}), job["backbone"],
                                         json.loads((path / "results.json").read_text())))
            evaluations.pop(job_hash, None)
    inputs.missing = sorted(name for name, _ in evaluations.values())
    inputs.missing_seeds = sorted({seed for _, seed in evaluations.values() if seed is not None})
    # What was planned: the plan's seeds, and those of every run on disk (it was planned once).
    seeds = [_seed(r.get("labels", {})) for r in rows if r["phase"] == "evaluate"] + \
        [j.seed for j in planned or [] if j.phase == "evaluate"] + [r.seed for r in inputs.runs]
    if any(s is not None for s in seeds):
        inputs.planned_seeds = max(s for s in seeds if s is not None)
    return inputs


ANSWER_FILE = "answer.json"  # a local run's design and looks (the operator keeps them in its records)


def _seed(labels: dict) -> int | None:
    return int(labels["seed"]) if str(labels.get("seed") or "").isdigit() else None


def _local_cost(row: dict) -> dict | None:
    """A job of plan.json as a cost: the wall time of its attempts on the cores it had (a job adopted from
    an earlier run keeps that run's figure, local.LocalExecutor._adopt_complete)."""
    if not row.get("seconds"):
        return None
    return {"seed": _seed(row.get("labels") or {}), "hours": row["seconds"] / 3600,
            "devices": row.get("cpus") or 1, "unit": "CPU-hours"}


def from_cluster(seen) -> Inputs:
    """A live experiment: its plan, recomputed from the spec, the operator's results and, where the
    operator brought them home, each run's per-item results (stilts_contract.items)."""
    spec = getattr(seen, "spec", None)
    inputs = Inputs(experiment=seen.name, source=f"tx/{seen.name}", runs=[],
                    design=answer.Design.of(spec) if spec is not None else None,
                    looks=list(getattr(seen, "looks", []) or []), costs=list(getattr(seen, "costs", []) or []))
    stored_items = getattr(seen, "items", {}) or {}
    records = getattr(seen, "records", {}) or {}
    for job in seen.jobs:
        summary = seen.results.get(job.hash)
        if job.phase == "pretrain" and summary and "alignment" in summary:
            inputs.alignment[job.backbone] = {"mean": summary["alignment"], "byLanguage": {}}
        if job.phase != "evaluate":
            continue
        if not summary or "test" not in summary:
            inputs.missing.append(job.name)
            if job.seed is not None and records.get(job.hash, {}).get("state") not in ("Failed", "Blocked"):
                inputs.missing_seeds.append(job.seed)  # still to come: no look goes past it
            continue
        results = {"languages": {lang: {"test": acc} for lang, acc in summary["test"].items()},
                   "predicted": summary.get("predicted") or {}, "testItems": summary.get("testItems", 0)}
        if job.hash in stored_items:
            results["correct"] = contract_items.decode(stored_items[job.hash])
        inputs.runs.append(_run_from(job.job.labels, job.job.backbone.model_dump(), results))
    inputs.missing_seeds = sorted(set(inputs.missing_seeds))
    inputs.planned_seeds = max((j.seed for j in seen.jobs if j.phase == "evaluate" and j.seed is not None),
                               default=None)
    return inputs


# -- statistics ---------------------------------------------------------------------------------------

def _measure(run: Run, lang: str, split: str) -> stats.Measure | None:
    """A run's score on a language, or on the average over languages. XNLI's languages are translations of
    one item set, so the average's items are the item indices, each averaged over languages (correct for
    independent languages too, as long as every language has the same number of items)."""
    if lang == AVG:
        values = [v.get(split) for v in run.accuracy.values()]
        if not values or None in values:
            return None
        accuracy = statistics.fmean(values)
        if split != "test":
            return stats.Measure(accuracy)
        average = run.average_vector()
        return stats.Measure(accuracy, len(average) if average is not None else max(run.items.values(), default=0),
                             average)
    value = (run.accuracy.get(lang) or {}).get(split)
    if value is None:
        return None
    if split != "test":
        return stats.Measure(value)
    return stats.Measure(value, run.items.get(lang, 0), run.vector(lang))


def _arm(runs: dict[int, Run], lang: str, split: str) -> dict[int, stats.Measure]:
    measures = {seed: _measure(run, lang, split) for seed, run in runs.items()}
    return {seed: m for seed, m in measures.items() if m is not None}


def _contrast(arms: list[tuple[float, dict[int, Run]]], lang: str, split: str, alpha: float,
              paired: bool = True) -> dict | None:
    measured = [(w, _arm(runs, lang, split)) for w, runs in arms]
    if any(not m for _, m in measured):
        return None
    return stats.contrast(measured, paired=paired, alpha=alpha)


def _clip(ci: dict | None) -> dict | None:
    """An accuracy's interval, inside [0, 1] (clipping cannot lose the truth, which is inside too)."""
    if ci and ci.get("low") is not None:
        ci = {**ci, "low": max(0.0, ci["low"]), "high": min(1.0, ci["high"])}
    return ci


def comparator(moe: str, runs: list[Run]) -> tuple[str | None, str]:
    """The dense backbone an MoE backbone is compared with, and how: like with like means the same
    checkpoint and the same continued pretraining before the runs."""
    info = {r.backbone: r for r in runs}
    m = info[moe]
    dense = [b for b, r in info.items() if r.architecture == "dense" and r.model == m.model]
    same = [b for b in dense if info[b].pretraining == m.pretraining]
    if same:
        how = "like with like: same checkpoint" + (f", both with {m.pretraining}" if m.pretraining else "")
        return same[0], how
    if dense:
        return dense[0], (f"NOT like with like: {moe} had {m.pretraining or 'no continued pretraining'}, "
                          f"{dense[0]} had {info[dense[0]].pretraining or 'none'}")
    others = [b for b, r in info.items() if r.architecture == "dense"]
    return (others[0], "different checkpoints") if others else (None, "")


def _group(runs: list[Run]) -> dict:
    by: dict = {}
    for run in runs:
        by.setdefault(run.backbone, {}).setdefault(run.task, {})[run.seed] = run
    return by


def _comparisons(runs: list[Run], by: dict) -> list[tuple[str, str, str, str, str]]:
    """(key, moe, dense, task, how) of every dense-vs-MoE comparison the runs allow."""
    architecture = {r.backbone: r.architecture for r in runs}
    out = []
    for moe in sorted(b for b, a in architecture.items() if a == "moe"):
        dense, how = comparator(moe, runs)
        if not dense or BASELINE not in by[moe] or BASELINE not in by[dense]:
            continue
        for task in sorted(set(by[moe]) & set(by[dense]) - {BASELINE}):
            out.append((f"{moe}-vs-{dense}/{task}", moe, dense, task, how))
    return out


def _interaction_arms(by: dict, moe: str, dense: str, task: str) -> list:
    return [(1, by[moe][task]), (-1, by[moe][BASELINE]), (-1, by[dense][task]), (1, by[dense][BASELINE])]


def _interaction(by: dict, moe: str, dense: str, task: str, languages: list[str], split: str, how: str,
                 alpha: float) -> dict:
    """(MoE task - MoE base) - (dense task - dense base): paired by seed (the claim) and as a pooled
    two-way contrast of unpaired cells (every seed counts, no pairing assumed)."""
    arms = _interaction_arms(by, moe, dense, task)
    per_lang = {}
    for lang in languages:
        paired = _contrast(arms, lang, split, alpha)
        pooled = _contrast(arms, lang, split, alpha, paired=False)
        if paired or pooled:  # with no seed shared by the four arms only the pooled contrast exists
            per_lang[lang] = {"paired": paired, "pooled": pooled}
    avg = per_lang.get(AVG, {}).get("paired") or {}
    return {"languages": per_lang, "comparison": how,
            "minimumDetectable": stats.minimum_detectable(avg.get("se"), avg.get("df"))}


def _tables(by: dict, languages: list[str], split: str, alpha: float) -> tuple[dict, dict, dict]:
    """Accuracy per arm, gain over the baseline and the masked-LM ablation, per language."""
    accuracy, gains, ablation = {}, {}, {}
    for backbone, by_task in sorted(by.items()):
        for task, seeds in sorted(by_task.items()):
            cells = {lang: _clip(_contrast([(1, seeds)], lang, split, alpha)) for lang in languages}
            accuracy[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
            if task != BASELINE and BASELINE in by_task:
                cells = {lang: _contrast([(1, seeds), (-1, by_task[BASELINE])], lang, split, alpha)
                         for lang in languages}
                gains[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
            if task.endswith(MLM_ARM) and plain_task(task) in by_task:  # the ablation against plain STILTs
                cells = {lang: _contrast([(1, seeds), (-1, by_task[plain_task(task)])], lang, split, alpha)
                         for lang in languages}
                ablation[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
    return accuracy, gains, ablation


# -- looks --------------------------------------------------------------------------------------------

def _look_figures(runs: list[Run], split: str, level: float) -> dict[str, dict]:
    """Each comparison's average, paired by seed, at a look's level: what a look decides on."""
    by = _group(runs)
    out = {}
    for key, moe, dense, task, _ in _comparisons(runs, by):
        ci = _contrast(_interaction_arms(by, moe, dense, task), AVG, split, level)
        if ci:
            out[key] = ci
    return out


def _half(ci: dict) -> float | None:
    return None if ci.get("low") is None else (ci["high"] - ci["low"]) / 2


def history(inputs: Inputs, split: str = "test") -> list[dict]:
    """The looks of inputs.design on inputs' runs (what answer.take needs, without the rest of the report)."""
    return _history(inputs, split) if inputs.design else []


def _history(inputs: Inputs, split: str) -> list[dict]:
    """Every look of the design, on the runs of its seeds: the looks recorded, then any further look
    whose wave is complete (a volume copy, or the look an executor is taking now), while the last one
    continued. Each holds its seeds, level, every comparison's average and p, and its decision."""
    design = inputs.design
    history: list[dict] = []
    while len(history) < design.most_looks:
        look = len(history) + 1
        n = design.sizes(look)[-1]
        if look > len(inputs.looks):
            last = (history[-1]["decision"] if history else answer.CONTINUE)
            planned = inputs.planned_seeds if inputs.planned_seeds is not None else \
                max((r.seed for r in inputs.runs), default=0)
            # The wave was planned, and none of its evaluate jobs is still to come (failed ones are not).
            complete = n <= planned and not any(s <= n for s in inputs.missing_seeds)
            if last != answer.CONTINUE or not complete:
                break
        level = design.levels(look)[-1]
        figures = _look_figures([r for r in inputs.runs if r.seed <= n], split, level)
        history.append({"look": look, "seeds": n, "level": level, "figures": figures})
        pvalues = {k: [h["figures"].get(k, {}).get("pClaim") for h in history] for k in figures}
        claimed = answer.sequential_holm(pvalues, lambda a, look=look: design.levels(look, a))
        comparisons = {k: {"decided": k in claimed, "halfWidth": _half(ci)} for k, ci in figures.items()}
        decision = answer.decide(design, design.sizes(look), comparisons)
        if look <= len(inputs.looks):  # what happened is what the state says
            decision = inputs.looks[look - 1]["decision"]
        history[-1].update(decision=decision, claimed=claimed)
    return history


# -- the report ---------------------------------------------------------------------------------------

def build(inputs: Inputs, split: str = "test", tables: bool = True) -> dict:
    """The report as a dict (report.json). `tables`: the accuracy, gain and ablation tables too (a
    simulation that measures the research question's claims leaves them out, for speed)."""
    design = inputs.design
    history = _history(inputs, split) if design else []
    runs, level, levels_at = inputs.runs, stats.ALPHA, (lambda a: (a,))
    if design and not history:  # before the first look nothing may be claimed: it would be a look of its own
        levels_at = lambda a: (0.0,)  # noqa: E731
    if history:
        seeds_in = history[-1]["seeds"]
        runs = [r for r in inputs.runs if r.seed <= seeds_in]
        level = history[-1]["level"]
        levels_at = lambda a: design.levels(len(history), a)  # noqa: E731
    by = _group(runs)
    languages = sorted({lang for r in runs for lang in r.accuracy}) + [AVG]
    accuracy, gains, ablation = _tables(by, languages, split, level) if tables else ({}, {}, {})
    interaction = {key: _interaction(by, moe, dense, task, languages, split, how, level)
                   for key, moe, dense, task, how in _comparisons(runs, by)}
    earlier = {k: [h["figures"].get(k, {}).get("pClaim") for h in history[:-1]] for k in interaction}
    family = _adjust(interaction, earlier, levels_at)
    flags = [{"run": f"{r.backbone}/{r.task}/s{r.seed}", "language": lang, "share": max(shares),
              "label": inputs.labels[shares.index(max(shares))] if len(shares) == len(inputs.labels) else ""}
             for r in runs for lang, shares in sorted(r.predicted.items()) if max(shares) >= CONSTANT_SHARE]
    predicted = {}
    for lang in languages[:-1]:
        shares = [r.predicted[lang] for r in runs if lang in r.predicted]
        if shares:
            predicted[lang] = [round(statistics.fmean(s[k] for s in shares), 4) for k in range(len(shares[0]))]
    tasks = {r.task for r in runs}
    notes = {t: contract_tasks.get(plain_task(t)).target_data for t in sorted(tasks - {BASELINE})
             if plain_task(t) in contract_tasks.TASKS and contract_tasks.get(plain_task(t)).target_data}
    return {"experiment": inputs.experiment, "source": inputs.source, "split": split, "languages": languages,
            "accuracy": accuracy, "gain": gains, "interaction": interaction, "mlmAblation": ablation,
            "claims": {**family, "alpha": stats.ALPHA, "minSeedsPerLanguage": stats.CLAIM_MIN_SEEDS},
            "level": level, "architecture": {r.backbone: r.architecture for r in runs},
            "alignment": inputs.alignment, "predicted": predicted, "labels": inputs.labels,
            "constantPredictors": flags, "targetDataNotes": notes, "missing": inputs.missing,
            "runs": len(runs), "answer": _answer(inputs, history, interaction, runs) if design else None,
            "itemsMissing": sum(1 for r in runs if not r.correct)}


def _adjust(interaction: dict, earlier: dict, levels_at) -> dict:
    """Every claim the text makes, with the family-wise error at most alpha over all of them, by serial
    gatekeeping: first each comparison's average (Holm over the comparisons, each tested at every look
    against its boundaries: answer.sequential_holm); then, only if every average differs, each language
    of comparisons with enough seeds (Holm over all of those, at the last look). The averages are the
    research question, so exploratory per-language tests do not dilute them, and a language is never
    claimed where its comparison's average is not. Writes `claimed` and `bound` (the level its p was
    held to) beside each p tested."""
    averages = {key: earlier.get(key, []) + [result["languages"][AVG]["paired"]["pClaim"]]
                for key, result in interaction.items()
                if (result["languages"].get(AVG) or {}).get("paired") and
                result["languages"][AVG]["paired"]["p"] is not None}
    claimed = answer.sequential_holm(averages, levels_at)
    still_open = len(averages) - len(claimed)
    for key in averages:
        paired = interaction[key]["languages"][AVG]["paired"]
        look, bound = claimed.get(key, (None, levels_at(stats.ALPHA / max(1, still_open))[-1]))
        paired.update(claimed=key in claimed, bound=bound, claimedAtLook=None if look is None else look + 1)
    gate = bool(averages) and len(claimed) == len(averages) == len(interaction)
    languages = {(key, lang): r["paired"]["pClaim"] for key, result in interaction.items()
                 for lang, r in result["languages"].items()
                 if lang != AVG and r["paired"] and r["paired"]["p"] is not None
                 and r["paired"]["n"] >= stats.CLAIM_MIN_SEEDS}
    if gate:
        looks = len(levels_at(stats.ALPHA))
        found = answer.sequential_holm({k: [None] * (looks - 1) + [p] for k, p in languages.items()}, levels_at)
        for (key, lang) in languages:
            paired = interaction[key]["languages"][lang]["paired"]
            paired.update(claimed=(key, lang) in found, bound=found.get((key, lang), (None, None))[1])
    return {"averages": len(averages), "languages": len(languages), "languagesTested": gate and bool(languages),
            "looks": len(levels_at(stats.ALPHA))}


def _answer(inputs: Inputs, history: list[dict], interaction: dict, runs: list[Run]) -> dict:
    """The sequential design's part of the report: its looks, why it stopped, each comparison's answer,
    what the answer cost and what a fixed design of the same precision would have cost."""
    design = inputs.design
    out = {"design": {"targetHalfWidth": design.target, "firstSeeds": design.first,
                      "seedsPerLook": design.per_look, "maxSeeds": design.max_seeds,
                      "spending": f"Hwang-Shih-DeCani, gamma {answer.boundaries.SPENDING_GAMMA:g}"},
           "look": len(history), "seeds": history[-1]["seeds"] if history else 0,
           "decision": history[-1]["decision"] if history else "waiting for the first look",
           "looks": [{"look": h["look"], "seeds": h["seeds"], "level": h["level"], "decision": h["decision"],
                      "comparisons": {k: {"mean": c["mean"], "low": c["low"], "high": c["high"],
                                          "halfWidth": _half(c), "decided": k in h["claimed"]}
                                      for k, c in h["figures"].items()}} for h in history],
           "comparisons": {}, "pending": sum(1 for r in inputs.runs
                          if history and history[-1]["seeds"] < r.seed <= design.max_seeds)}
    widths = []
    for key, result in interaction.items():
        paired = result["languages"].get(AVG, {}).get("paired")
        if not paired or paired.get("se") is None:
            continue
        seed_var = (paired["se"] ** 2 - paired["itemSe"] ** 2) * paired["n"]
        item_var = paired["itemSe"] ** 2
        half = _half(paired)
        widths.append((half, seed_var, item_var))
        out["comparisons"][key] = {
            "mean": paired["mean"], "low": paired["low"], "high": paired["high"], "halfWidth": half,
            "p": paired.get("pClaim"), "bound": paired.get("bound"), "decided": bool(paired.get("claimed")),
            "decidedAtLook": paired.get("claimedAtLook"), "n": paired["n"], "seedSd": math.sqrt(max(seed_var, 0)),
            "itemSe": paired["itemSe"],
            "precise": half is not None and half <= design.target,
            "projectedSeeds": answer.projected_seeds(design, seed_var, item_var),
            "fixedSeedsForTarget": answer.fixed_seeds_for(design.target, seed_var, item_var)}
    seeds_used = sorted({r.seed for r in runs})
    spent = answer.cost([c for c in inputs.costs if c["seed"] is None or c["seed"] in seeds_used], seeds_used)
    out["cost"] = spent
    if widths and spent:
        width = max(w for w, _, _ in widths if w is not None) if any(w for w, _, _ in widths) else None
        needs = [answer.fixed_seeds_for(width, sv, iv) for _, sv, iv in widths] if width else []
        k = max(needs) if needs and None not in needs else None
        out["fixedDesign"] = {"halfWidth": width, "seeds": k,
                              "cost": None if k is None else spent["shared"] + k * spent["perSeed"]}
    return out


def claims(report: dict) -> list[tuple[str, str, float]]:
    """(comparison, language, sign) of every difference the report claims."""
    return [(key, lang, math.copysign(1.0, r["paired"]["mean"]))
            for key, result in sorted(report["interaction"].items())
            for lang, r in result["languages"].items() if (r["paired"] or {}).get("claimed")]


def excludes_zero(ci: dict) -> bool:
    return ci.get("low") is not None and (ci["low"] > 0 or ci["high"] < 0)


def plan_power(seeds: int, sd: float = ASSUMED_SEED_SD) -> str:
    """What `stilts plan` says about the grid's power before any run."""
    mdi = stats.minimum_detectable(sd / 100 / seeds ** 0.5, seeds - 1) if seeds > 1 else None
    if mdi is None:
        return (f"{seeds} seed: no interval for the dense-vs-MoE gain difference; use at least 2 seeds "
                "(3 detect about 3 points, 10 about 1)")
    return (f"with {seeds} seeds the smallest dense-vs-MoE gain difference this grid detects (paired, 80% power, "
            f"alpha 0.05) is about {mdi * 100:.1f} points, assuming a seed-to-seed SD of {sd:g} point for that "
            "difference (--seed-sd); intermediate-task effects on XNLI are about a point. Once runs finish, "
            "`stilts report` gives it from the measured SD")


# -- text, json ---------------------------------------------------------------------------------------

def _fmt(ci: dict, scale: float = 100, sign: bool = False) -> str:
    mean = f"{ci['mean'] * scale:+.1f}" if sign else f"{ci['mean'] * scale:.1f}"
    if ci.get("low") is None:
        return mean
    return f"{mean} [{ci['low'] * scale:.1f}, {ci['high'] * scale:.1f}]"


def _level_words(report: dict) -> str:
    """The intervals' level: 95%, or with a sequential design the level its last look may spend."""
    level = report["level"]
    return "95%" if abs(level - stats.ALPHA) < 1e-12 else f"{(1 - level) * 100:.1f}%"


def to_text(report: dict) -> str:
    lines = _accuracy_text(report) + _predicted_text(report) + _alignment_text(report)
    if report["gain"]:
        lines += ["", f"Gain over the backbone's baseline (points), paired by seed, mean [{_level_words(report)} "
                  "interval]", ""]
        lines += _contrast_table(report["gain"], report["languages"])
    for task, note in report["targetDataNotes"].items():
        lines.append(f"  note: {task}'s gain is partly more training on the target's data ({note})")
    if report.get("mlmAblation"):
        lines += ["", "Ablation (Phang et al. 2020): intermediate training mixed with multilingual masked-LM, minus "
                  "plain STILTs on the same task (points), paired by seed", ""]
        lines += _contrast_table(report["mlmAblation"], report["languages"])
    if report["interaction"]:
        lines += _question_text(report)
    elif report["gain"]:
        lines += ["", "Research question: needs a dense and an MoE backbone, each with a baseline."]
    if report.get("answer"):
        lines += _answer_text(report)
    if report.get("itemsMissing"):
        lines += ["", f"{report['itemsMissing']} run(s) without per-item results: their test-set noise is bounded by "
                  "the binomial, which is cautious (a copy of the volume, or the operator's items ConfigMaps, "
                  "give the paired term)"]
    if report["missing"]:
        lines += ["", f"Partial report: {len(report['missing'])} evaluate job(s) have no results yet: "
                  + ", ".join(report["missing"][:10]) + (" ..." if len(report["missing"]) > 10 else "")]
    return "\n".join(lines) + "\n"


def _accuracy_text(report: dict) -> list[str]:
    langs = report["languages"]
    lines = [f"XNLI {report['split']} accuracy (%), mean over seeds ({report['runs']} runs, from {report['source']})", ""]
    rows = [[k] + [f"{v[lang]['mean'] * 100:.1f}" if lang in v else "" for lang in langs]
            for k, v in sorted(report["accuracy"].items())]
    if rows:
        every = {lang: statistics.fmean(v[lang]["mean"] for v in report["accuracy"].values() if lang in v)
                 for lang in langs}
        rows.append(["all runs"] + [f"{every[lang] * 100:.1f}" for lang in langs])
        lines += _table([["backbone/task"] + langs] + rows)
        lines += ["", f"{_level_words(report)} intervals of the average ({METHOD}):"]
        lines += [f"  {k}: {_fmt(v[AVG])}" for k, v in sorted(report["accuracy"].items()) if AVG in v]
    return lines


def _predicted_text(report: dict) -> list[str]:
    if not report["predicted"]:
        return []
    labels = report["labels"]
    lines = ["", f"Predicted labels, share of test items (mean over runs): {' / '.join(labels)}"]
    lines += _table([["language"] + labels] + [[lang] + [f"{s * 100:.0f}%" for s in shares]
                                                for lang, shares in sorted(report["predicted"].items())])
    flagged = report["constantPredictors"]
    lines.append("Constant predictors (one label for >= 95% of items): " + (
        ", ".join(f"{f['run']} {f['language']} ({f['label']} {f['share'] * 100:.0f}%)" for f in flagged)
        if flagged else "none"))
    return lines


def _alignment_text(report: dict) -> list[str]:
    if not report["alignment"]:
        return []
    lines = ["", "Alignment after pretraining: word-translation retrieval from contextual states (chance ~1%)"]
    for backbone, a in sorted(report["alignment"].items()):
        per = " ".join(f"{k} {v * 100:.0f}" for k, v in sorted(a.get("byLanguage", {}).items()))
        lines.append(f"  {backbone}: {a['mean'] * 100:.1f}%" + (f"  ({per})" if per else ""))
    return lines


def _contrast_table(contrasts: dict, langs: list[str]) -> list[str]:
    """One row per contrast: its average with the interval, then each language's mean (points)."""
    others = [lang for lang in langs if lang != AVG]
    return _table([["backbone/task", AVG] + others]
                  + [[k, _fmt(v[AVG], sign=True)] + [f"{v[lang]['mean'] * 100:+.1f}" for lang in others if lang in v]
                     for k, v in sorted(contrasts.items()) if AVG in v])


def _verdict(paired: dict, family: dict, comparisons: int) -> str:
    if paired["low"] is None:
        return "one seed: no interval, no conclusion" if paired["n"] < 2 else "no test-set noise known: no interval"
    if paired.get("claimed"):
        look = f" at look {paired['claimedAtLook']}" if paired.get("claimedAtLook") and family.get("looks", 1) > 1 else ""
        return f"the gain differs between MoE and dense{look} (p = {paired['pClaim']:.2g} <= its boundary " \
               f"{paired['bound']:.2g})"
    if excludes_zero(paired):
        if paired["p"] <= paired["bound"] < paired["pClaim"]:
            why = ("the claim's p is the fiducial one, more cautious than the interval's where few seeds carry "
                   "the noise")
        else:
            why = f"the boundary holds the error at 5% over {comparisons} comparison(s)" + (
                f" and {family['looks']} looks" if family.get("looks", 1) > 1 else "")
        return (f"interval excludes 0, but the claim needs p <= {paired['bound']:.2g} and has "
                f"{paired['pClaim']:.2g} ({why}): no claim")
    return "interval includes 0: no evidence the gain differs"


def _question_text(report: dict) -> list[str]:
    family, alpha = report["claims"], report["claims"]["alpha"]
    then = (f"then, only if every average differs, each language, Holm-adjusted over all {family['languages']}"
            if family["languages"] else f"no per-language claims (they need {family['minSeedsPerLanguage']} seeds)")
    lines = ["", f"Research question: gain(MoE) - gain(dense), points, mean [{_level_words(report)} interval]",
             f"Claims: each comparison's average, Holm-adjusted over the {family['averages']}"
             + (", at every look against its error-spending boundary" if family.get("looks", 1) > 1 else "")
             + f"; {then}. The chance of any false claim is at most {alpha:.0%}.", ""]
    for key, result in sorted(report["interaction"].items()):
        avg = result["languages"].get(AVG)
        if not avg:
            continue
        paired, pooled = avg["paired"], avg["pooled"]
        if not paired:
            lines.append(f"  {key}: no seed ran in all four arms, so nothing pairs: pooled two-way over all "
                         f"{pooled['n']} runs {_fmt(pooled, sign=True)}  -> no claim (claims pair by seed)")
            lines.append(f"    compared {result['comparison']}")
            continue
        # The pooled contrast adds what pairing drops: it is shown when some seeds are unpaired (with every
        # seed paired it is only wider, as it ignores what a seed shares across a backbone's runs).
        unpaired = f"; pooled two-way over all {pooled['n']} runs {_fmt(pooled, sign=True)}" \
            if pooled and pooled["n"] > 4 * paired["n"] else ""
        lines.append(f"  {key}: paired by seed {_fmt(paired, sign=True)}{unpaired}  -> "
                     f"{_verdict(paired, family, family['averages'])}")
        lines.append(f"    compared {result['comparison']}")
        if result["minimumDetectable"]:
            lines.append(f"    smallest difference these seeds detect (80% power): "
                         f"{result['minimumDetectable'] * 100:.1f} points")
        if paired["n"] < family["minSeedsPerLanguage"]:
            lines.append(f"    per language: no claims with {paired['n']} seed(s); they need "
                         f"{family['minSeedsPerLanguage']}")
        elif not family["languagesTested"]:
            lines.append("    per language: not tested, since not every comparison's average differs")
        else:
            sig = [lang for lang, r in result["languages"].items()
                   if lang != AVG and (r["paired"] or {}).get("claimed")]
            lines.append("    per language, after Holm's adjustment: "
                         + (f"the gain differs for {', '.join(sig)}" if sig else "no language differs"))
    return lines


def _answer_text(report: dict) -> list[str]:
    a, design = report["answer"], report["answer"]["design"]
    target = design["targetHalfWidth"] * 100
    lines = ["", f"The answer (sequential design: first {design['firstSeeds']} seeds, then {design['seedsPerLook']} "
             f"per look up to {design['maxSeeds']}; a comparison is answered once decided or its interval is "
             f"within +/-{target:.1f} points; error spent over the looks by {design['spending']})"]
    if not a["looks"]:
        return lines + [f"  waiting for the first look (after seed {design['firstSeeds']}); the intervals above are "
                        "provisional, at the plain 95%"]
    lines.append(f"  Every interval above is at {_level_words(report)}, the level look {a['look']} may spend: taken "
                 "together, the looks' intervals cover the truth 95% of the time, however the design stops.")
    rows = [["look", "seeds", "level", "decision"] + sorted(a["looks"][-1]["comparisons"])]
    for look in a["looks"]:
        rows.append([str(look["look"]), str(look["seeds"]), f"{look['level']:.4f}", look["decision"]]
                    + [_look_cell(c) for _, c in sorted(look["comparisons"].items())])
    lines += [""] + ["  " + r for r in _table(rows)]
    why = {"decided": "every comparison is decided", "precise enough": "every comparison is decided or precise "
           "enough", "budget reached": "the seeds reached the maximum", "continue": "a comparison is still open"}
    lines += ["", f"  {'Stopped' if a['decision'] != 'continue' else 'Running'} after look {a['look']} "
              f"({a['seeds']} seeds): {why.get(a['decision'], a['decision'])}"
              + (f"; {a['pending']} run(s) of the next wave wait for their look" if a["pending"] else "")]
    for key, c in sorted(a["comparisons"].items()):
        state = ("decided" if c["decided"] else "precise enough" if c["precise"] else "open")
        more = "" if c["decided"] or c["precise"] or c["halfWidth"] is None else (
            f"; at the measured seed SD ({c['seedSd'] * 100:.1f} points per seed) about {c['projectedSeeds']} seeds "
            "reach the target" if c["projectedSeeds"] else
            f"; at the measured seed SD ({c['seedSd'] * 100:.1f} points per seed) {design['maxSeeds']} seeds do not "
            "reach the target" + (f" (a fixed design needs about {c['fixedSeedsForTarget']} seeds for it, a "
                                  "sequential one a few more)" if c.get("fixedSeedsForTarget") else ""))
        width = "" if c["halfWidth"] is None else f" (+/-{c['halfWidth'] * 100:.1f})"
        lines.append(f"  {key}: {state}, {_fmt(c, sign=True)}{width}{more}")
    spent, fixed = a.get("cost"), a.get("fixedDesign")
    if spent:
        lines.append(f"  Cost of the answer: {spent['spent']:.3g} {spent['unit']} for {spent['seeds']} seeds "
                     f"({spent['perSeed']:.3g} per seed, {spent['shared']:.3g} shared by all)")
        if fixed and fixed.get("seeds"):
            lines.append(f"  A fixed design of the same precision (+/-{fixed['halfWidth'] * 100:.1f} points at 95%, "
                         f"at the measured SD) needs {fixed['seeds']} seeds: {fixed['cost']:.3g} {spent['unit']}; "
                         f"its {design['maxSeeds']} seeds, bought up front, "
                         f"{spent['shared'] + design['maxSeeds'] * spent['perSeed']:.3g}")
    return lines


def _look_cell(c: dict) -> str:
    if c["halfWidth"] is None:
        return f"{c['mean'] * 100:+.1f}"
    return f"{c['mean'] * 100:+.1f} +/-{c['halfWidth'] * 100:.1f}" + (" decided" if c["decided"] else "")


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def write(inputs: Inputs, out_dir: Path, split: str = "test") -> str:
    """report.json, report.txt and the figures (figures.py: heatmap.png, answer.png) into out_dir;
    returns the text. report.json keeps answer.png's data as "answerFigure"."""
    from . import figures

    out_dir.mkdir(parents=True, exist_ok=True)
    report = build(inputs, split)
    text = to_text(report)
    (out_dir / "report.json").write_text(json.dumps({**report, "answerFigure": figures.answer_data(report)}, indent=2))
    (out_dir / "report.txt").write_text(text)
    figures.write(report, out_dir)
    return text


def outputs(out_dir: Path) -> list[Path]:
    """The files `write` leaves in out_dir (a figure that does not apply is not there)."""
    from .figures import FIGURES

    return [p for p in (out_dir / name for name in ("report.txt", "report.json") + FIGURES) if p.is_file()]
