"""Report: XNLI accuracy per (backbone, intermediate task) and language, the gain over each backbone's
baseline, and the research question as an interaction: gain(MoE) - gain(dense).

Inputs come from any of three places, read into the same `Inputs`:
- a run directory (`stilts run`'s, or a copy of an experiment's directory on the cluster volume): the
  job directories' job.json, results.json and metrics.json; plan.json or the spec says what is missing;
- a live experiment (`stilts report tx/NAME`): the plan recomputed from its spec and the results the
  operator keeps (stats.py explains what differs without per-item results).

Statistics (stats.py): every interval is a t interval over seeds and the shared test items; the
interaction both paired by seed and as a pooled two-way contrast. The claims the text makes (each
comparison's average, and per language from 3 seeds on) form one Holm family; the minimum detectable
interaction for the seeds at hand.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stilts_contract import tasks as contract_tasks
from stilts_contract.names import BASELINE, COMPLETE, MLM_ARM, plain_task

from . import stats

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


@dataclass
class Inputs:
    experiment: str
    source: str
    runs: list[Run]
    missing: list[str] = field(default_factory=list)
    alignment: dict = field(default_factory=dict)  # backbone -> {"mean": f, "byLanguage": {...}}
    labels: list[str] = field(default_factory=lambda: ["entailment", "neutral", "contradiction"])


def _run_from(labels: dict, backbone: dict, results: dict) -> Run:
    langs = results.get("languages", {})
    correct = results.get("correct") or {}
    items = {lang: len(correct[lang]) if lang in correct else results.get("testItems", 0) for lang in langs}
    return Run(backbone=labels.get("backbone", backbone.get("name", "")), architecture=backbone.get("architecture", "dense"),
               task=labels.get("intermediateTask") or BASELINE, seed=int(labels.get("seed") or 0),
               model=backbone.get("model", ""), pretraining=labels.get("pretraining", ""),
               accuracy=langs, items=items, correct=correct, predicted=results.get("predicted") or {})


def from_directory(directory: str | Path, planned: list | None = None) -> Inputs:
    """A run directory: `stilts run`'s, or a copy of the experiment's directory from the volume. The
    job directories say what finished; plan.json (or `planned`, from the spec) says what is missing."""
    directory = Path(directory)
    manifest = directory / "plan.json"
    rows = json.loads(manifest.read_text())["jobs"] if manifest.is_file() else []
    where = {r["hash"]: Path(r["directory"]) for r in rows}
    evaluations = {r["hash"]: r["name"] for r in rows if r["phase"] == "evaluate"}
    evaluations.update({j.hash: j.name for j in planned or [] if j.phase == "evaluate"})
    for job_json in directory.glob("*/job.json"):
        where.setdefault(job_json.parent.name, job_json.parent)
    inputs = Inputs(experiment=directory.name, source=str(directory), runs=[])
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
    inputs.missing = sorted(evaluations.values())
    return inputs


def from_cluster(seen) -> Inputs:
    """A live experiment: its plan, recomputed from the spec, and the operator's results."""
    inputs = Inputs(experiment=seen.name, source=f"tx/{seen.name}", runs=[])
    for job in seen.jobs:
        summary = seen.results.get(job.hash)
        if job.phase == "pretrain" and summary and "alignment" in summary:
            inputs.alignment[job.backbone] = {"mean": summary["alignment"], "byLanguage": {}}
        if job.phase != "evaluate":
            continue
        if not summary or "test" not in summary:
            inputs.missing.append(job.name)
            continue
        results = {"languages": {lang: {"test": acc} for lang, acc in summary["test"].items()},
                   "predicted": summary.get("predicted") or {}, "testItems": summary.get("testItems", 0)}
        inputs.runs.append(_run_from(job.job.labels, job.job.backbone.model_dump(), results))
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
        vectors = [run.vector(k) for k in sorted(run.accuracy)]
        aligned = all(v is not None for v in vectors) and len({len(v) for v in vectors}) == 1
        return stats.Measure(accuracy, max(run.items.values(), default=0) if not aligned else len(vectors[0]),
                             np.mean(vectors, axis=0) if aligned else None)
    value = (run.accuracy.get(lang) or {}).get(split)
    if value is None:
        return None
    if split != "test":
        return stats.Measure(value)
    return stats.Measure(value, run.items.get(lang, 0), run.vector(lang))


def _arm(runs: dict[int, Run], lang: str, split: str) -> dict[int, stats.Measure]:
    measures = {seed: _measure(run, lang, split) for seed, run in runs.items()}
    return {seed: m for seed, m in measures.items() if m is not None}


def _contrast(arms: list[tuple[float, dict[int, Run]]], lang: str, split: str, paired: bool = True) -> dict | None:
    measured = [(w, _arm(runs, lang, split)) for w, runs in arms]
    if any(not m for _, m in measured):
        return None
    return stats.contrast(measured, paired=paired)


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


def build(inputs: Inputs, split: str = "test") -> dict:
    by: dict = {}
    for run in inputs.runs:
        by.setdefault(run.backbone, {}).setdefault(run.task, {})[run.seed] = run
    languages = sorted({lang for r in inputs.runs for lang in r.accuracy}) + [AVG]
    accuracy, gains, interaction, ablation = {}, {}, {}, {}
    for backbone, by_task in sorted(by.items()):
        for task, seeds in sorted(by_task.items()):
            cells = {lang: _clip(_contrast([(1, seeds)], lang, split)) for lang in languages}
            accuracy[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
            if task != BASELINE and BASELINE in by_task:
                cells = {lang: _contrast([(1, seeds), (-1, by_task[BASELINE])], lang, split) for lang in languages}
                gains[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
            if task.endswith(MLM_ARM) and plain_task(task) in by_task:  # the ablation against plain STILTs
                cells = {lang: _contrast([(1, seeds), (-1, by_task[plain_task(task)])], lang, split)
                         for lang in languages}
                ablation[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
    architecture = {r.backbone: r.architecture for r in inputs.runs}
    for moe in sorted(b for b, a in architecture.items() if a == "moe"):
        dense, how = comparator(moe, inputs.runs)
        if not dense or BASELINE not in by[moe] or BASELINE not in by[dense]:
            continue
        for task in sorted(set(by[moe]) & set(by[dense]) - {BASELINE}):
            interaction[f"{moe}-vs-{dense}/{task}"] = _interaction(by, moe, dense, task, languages, split, how)
    family = _adjust(interaction)
    flags = [{"run": f"{r.backbone}/{r.task}/s{r.seed}", "language": lang, "share": max(shares),
              "label": inputs.labels[shares.index(max(shares))] if len(shares) == len(inputs.labels) else ""}
             for r in inputs.runs for lang, shares in sorted(r.predicted.items()) if max(shares) >= CONSTANT_SHARE]
    predicted = {}
    for lang in languages[:-1]:
        shares = [r.predicted[lang] for r in inputs.runs if lang in r.predicted]
        if shares:
            predicted[lang] = [round(statistics.fmean(s[k] for s in shares), 4) for k in range(len(shares[0]))]
    tasks = {r.task for r in inputs.runs}
    notes = {t: contract_tasks.get(plain_task(t)).target_data for t in sorted(tasks - {BASELINE})
             if plain_task(t) in contract_tasks.TASKS and contract_tasks.get(plain_task(t)).target_data}
    return {"experiment": inputs.experiment, "source": inputs.source, "split": split, "languages": languages,
            "accuracy": accuracy, "gain": gains, "interaction": interaction, "mlmAblation": ablation,
            "claims": {**family, "alpha": stats.ALPHA, "minSeedsPerLanguage": stats.CLAIM_MIN_SEEDS},
            "architecture": architecture,
            "alignment": inputs.alignment, "predicted": predicted, "labels": inputs.labels,
            "constantPredictors": flags, "targetDataNotes": notes, "missing": inputs.missing,
            "runs": len(inputs.runs)}


def _interaction(by: dict, moe: str, dense: str, task: str, languages: list[str], split: str, how: str) -> dict:
    """(MoE task - MoE base) - (dense task - dense base): paired by seed (the claim) and as a pooled
    two-way contrast of unpaired cells (every seed counts, no pairing assumed)."""
    arms = [(1, by[moe][task]), (-1, by[moe][BASELINE]), (-1, by[dense][task]), (1, by[dense][BASELINE])]
    per_lang = {}
    for lang in languages:
        paired = _contrast(arms, lang, split)
        if paired:
            per_lang[lang] = {"paired": paired, "pooled": _contrast(arms, lang, split, paired=False)}
    avg = per_lang.get(AVG, {}).get("paired", {})
    return {"languages": per_lang, "comparison": how,
            "minimumDetectable": stats.minimum_detectable(avg.get("se"), avg.get("df"))}


def _adjust(interaction: dict) -> dict:
    """Every claim the text makes, with the family-wise error at most alpha over all of them, by serial
    gatekeeping: first each comparison's average (Holm over the comparisons); then, only if every
    average differs, each language of comparisons with enough seeds (Holm over all of those). The
    averages are the research question, so exploratory per-language tests do not dilute them, and a
    language is never claimed where its comparison's average is not. Writes pHolm beside each p tested."""
    averages = {key: result["languages"][AVG]["paired"]["pClaim"] for key, result in interaction.items()
                if AVG in result["languages"] and result["languages"][AVG]["paired"]["p"] is not None}
    adjusted = stats.holm(averages)
    for key, p in adjusted.items():
        interaction[key]["languages"][AVG]["paired"]["pHolm"] = p
    gate = bool(adjusted) and all(p < stats.ALPHA for p in adjusted.values()) and len(adjusted) == len(interaction)
    languages = {(key, lang): r["paired"]["pClaim"] for key, result in interaction.items()
                 for lang, r in result["languages"].items()
                 if lang != AVG and r["paired"]["p"] is not None and r["paired"]["n"] >= stats.CLAIM_MIN_SEEDS}
    if gate:
        for (key, lang), p in stats.holm(languages).items():
            interaction[key]["languages"][lang]["paired"]["pHolm"] = p
    return {"averages": len(averages), "languages": len(languages), "languagesTested": gate and bool(languages)}


def claims(report: dict) -> list[tuple[str, str, float]]:
    """(comparison, language, sign) of every difference the report claims: Holm-adjusted p below alpha."""
    alpha = report["claims"]["alpha"]
    return [(key, lang, math.copysign(1.0, r["paired"]["mean"]))
            for key, result in sorted(report["interaction"].items())
            for lang, r in result["languages"].items() if r["paired"].get("pHolm", 1.0) < alpha]


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
            "difference (--seed-sd); intermediate-task effects on XNLI are about a point")


# -- text, json, heatmap -------------------------------------------------------------------------------

def _fmt(ci: dict, scale: float = 100, sign: bool = False) -> str:
    mean = f"{ci['mean'] * scale:+.1f}" if sign else f"{ci['mean'] * scale:.1f}"
    if ci.get("low") is None:
        return mean
    return f"{mean} [{ci['low'] * scale:.1f}, {ci['high'] * scale:.1f}]"


def to_text(report: dict) -> str:
    langs = report["languages"]
    lines = [f"XNLI {report['split']} accuracy (%), mean over seeds ({report['runs']} runs, from {report['source']})", ""]
    header = ["backbone/task"] + langs
    rows = [[k] + [f"{v[lang]['mean'] * 100:.1f}" if lang in v else "" for lang in langs]
            for k, v in sorted(report["accuracy"].items())]
    if rows:
        every = {lang: statistics.fmean(v[lang]["mean"] for v in report["accuracy"].values() if lang in v)
                 for lang in langs}
        rows.append(["all runs"] + [f"{every[lang] * 100:.1f}" for lang in langs])
        lines += _table([header] + rows)
        lines += ["", "95% intervals of the average (" + METHOD + "):"]
        lines += [f"  {k}: {_fmt(v[AVG])}" for k, v in sorted(report["accuracy"].items()) if AVG in v]
    if report["predicted"]:
        labels = report["labels"]
        lines += ["", f"Predicted labels, share of test items (mean over runs): {' / '.join(labels)}"]
        lines += _table([["language"] + labels] + [[lang] + [f"{s * 100:.0f}%" for s in shares]
                                                    for lang, shares in sorted(report["predicted"].items())])
        flagged = report["constantPredictors"]
        lines.append("Constant predictors (one label for >= 95% of items): " + (
            ", ".join(f"{f['run']} {f['language']} ({f['label']} {f['share'] * 100:.0f}%)" for f in flagged)
            if flagged else "none"))
    if report["alignment"]:
        lines += ["", "Alignment after pretraining: word-translation retrieval from contextual states (chance ~1%)"]
        for backbone, a in sorted(report["alignment"].items()):
            per = " ".join(f"{k} {v * 100:.0f}" for k, v in sorted(a.get("byLanguage", {}).items()))
            lines.append(f"  {backbone}: {a['mean'] * 100:.1f}%" + (f"  ({per})" if per else ""))
    if report["gain"]:
        lines += ["", "Gain over the backbone's baseline (points), paired by seed, mean [95% interval]", ""]
        lines += _table([["backbone/task", AVG] + [lang for lang in langs if lang != AVG]]
                        + [[k, _fmt(v[AVG], sign=True)] + [f"{v[lang]['mean'] * 100:+.1f}" for lang in langs
                                                            if lang != AVG and lang in v]
                           for k, v in sorted(report["gain"].items()) if AVG in v])
    for task, note in report["targetDataNotes"].items():
        lines.append(f"  note: {task}'s gain is partly more training on the target's data ({note})")
    if report.get("mlmAblation"):
        lines += ["", "Ablation (Phang et al. 2020): intermediate training mixed with multilingual masked-LM, minus "
                  "plain STILTs on the same task (points), paired by seed", ""]
        lines += _table([["backbone/task", AVG] + [lang for lang in langs if lang != AVG]]
                        + [[k, _fmt(v[AVG], sign=True)] + [f"{v[lang]['mean'] * 100:+.1f}" for lang in langs
                                                            if lang != AVG and lang in v]
                           for k, v in sorted(report["mlmAblation"].items()) if AVG in v])
    if report["interaction"]:
        family, alpha = report["claims"], report["claims"]["alpha"]
        then = (f"then, only if every average differs, each language, Holm-adjusted over all {family['languages']}"
                if family["languages"] else f"no per-language claims (they need {family['minSeedsPerLanguage']} seeds)")
        lines += ["", "Research question: gain(MoE) - gain(dense), points, mean [95% interval]",
                  f"Claims: each comparison's average, Holm-adjusted over the {family['averages']}; {then}. "
                  "The chance of any false claim is at most 5%.", ""]
        for key, result in sorted(report["interaction"].items()):
            avg = result["languages"].get(AVG)
            if not avg:
                continue
            paired, pooled = avg["paired"], avg["pooled"]
            adjusted = paired.get("pHolm")
            if paired["low"] is None:
                verdict = "one seed: no interval, no conclusion"
            elif adjusted is not None and adjusted < alpha:
                verdict = f"the gain differs between MoE and dense (Holm-adjusted p = {adjusted:.2g})"
            elif excludes_zero(paired):
                verdict = (f"interval excludes 0 on its own, but not after Holm's adjustment (p = {adjusted:.2g}): "
                           "no claim")
            else:
                verdict = "interval includes 0: no evidence the gain differs"
            # The pooled contrast adds what pairing drops: it is shown when some seeds are unpaired (with
            # every seed paired it is only wider, as it ignores what a seed shares across a backbone's runs).
            unpaired = f"; pooled two-way over all {pooled['n']} runs {_fmt(pooled, sign=True)}" \
                if pooled and pooled["n"] > 4 * paired["n"] else ""
            lines.append(f"  {key}: paired by seed {_fmt(paired, sign=True)}{unpaired}  -> {verdict}")
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
                       if lang != AVG and r["paired"].get("pHolm", 1) < alpha]
                lines.append("    per language, after Holm's adjustment: "
                             + (f"the gain differs for {', '.join(sig)}" if sig else "no language differs"))
    elif report["gain"]:
        lines += ["", "Research question: needs a dense and an MoE backbone, each with a baseline."]
    if report["missing"]:
        lines += ["", f"Partial report: {len(report['missing'])} evaluate job(s) have no results yet: "
                  + ", ".join(report["missing"][:10]) + (" ..." if len(report["missing"]) > 10 else "")]
    return "\n".join(lines) + "\n"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def heatmap(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = report["languages"]
    keys = sorted(report["accuracy"])
    values = [[report["accuracy"][k].get(lang, {"mean": float("nan")})["mean"] * 100 for lang in langs] for k in keys]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(langs), 1 + 0.45 * len(keys)))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(keys)), keys)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
    ax.set_title(f"XNLI {report['split']} accuracy (%), zero-shot from English")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(inputs: Inputs, out_dir: Path, split: str = "test") -> str:
    """report.json, report.txt and heatmap.png into out_dir; returns the text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build(inputs, split)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    text = to_text(report)
    (out_dir / "report.txt").write_text(text)
    if report["accuracy"]:
        heatmap(report, out_dir / "heatmap.png")
    return text
