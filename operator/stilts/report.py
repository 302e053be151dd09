"""Report: XNLI accuracy per (backbone, intermediate task) and language, the gain over each backbone's
baseline, and the research question as an interaction: gain(MoE) - gain(dense).

Inputs come from any of three places, read into the same `Inputs`:
- a run directory (`stilts run`'s, or a copy of an experiment's directory on the cluster volume): the
  job directories' job.json, results.json and metrics.json; plan.json or the spec says what is missing;
- a live experiment (`stilts report tx/NAME`): the plan recomputed from its spec and the results the
  operator keeps (stats.py explains what differs without per-item results).

Statistics (stats.py): accuracy and gain intervals from a bootstrap over seeds and test items (inside
[0, 100]); the interaction both paired by seed and as a pooled two-way contrast; per-language claims
Holm-adjusted; the minimum detectable interaction for the seeds at hand.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from stilts_contract import tasks as contract_tasks
from stilts_contract.names import BASELINE, COMPLETE, MLM_ARM, plain_task

from . import stats

AVG = "avg"
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
        inputs.runs.append(_run_from(job.body["labels"], job.body["backbone"], results))
    return inputs


# -- statistics ---------------------------------------------------------------------------------------

def _value(run: Run, lang: str, split: str) -> float | None:
    if lang == AVG:
        values = [v.get(split) for v in run.accuracy.values()]
        return statistics.fmean(values) if values and None not in values else None
    return (run.accuracy.get(lang) or {}).get(split)


def _items(run: Run, lang: str) -> int:
    if lang == AVG:
        return sum(run.items.values()) or 0
    return run.items.get(lang, 0)


def _bits(run: Run, lang: str) -> str | None:
    if lang == AVG:
        return "".join(run.correct[k] for k in sorted(run.correct)) if run.correct else None
    return run.correct.get(lang)


def _cell(runs: list[Run], lang: str, split: str) -> dict | None:
    rows = [(r, _value(r, lang, split)) for r in runs]
    rows = [(r, v) for r, v in rows if v is not None]
    if not rows:
        return None
    values = [v for _, v in rows]
    items = [_items(r, lang) for r, _ in rows]
    if split == "test" and all(items):
        bits = [_bits(r, lang) for r, _ in rows]
        return stats.bootstrap_accuracy(values, items, bits if all(bits) else None)
    return stats.t_interval(values)


def _paired(a: dict[int, Run], b: dict[int, Run], lang: str, split: str) -> dict | None:
    """a - b, paired by seed: bootstrap interval (seeds and items) and the paired t-test's p-value."""
    seeds = sorted(s for s in set(a) & set(b) if _value(a[s], lang, split) is not None
                   and _value(b[s], lang, split) is not None)
    if not seeds:
        return None
    va = [_value(a[s], lang, split) for s in seeds]
    vb = [_value(b[s], lang, split) for s in seeds]
    test = stats.t_interval([x - y for x, y in zip(va, vb)])
    items = [_items(a[s], lang) for s in seeds]
    if split == "test" and all(items):
        ba, bb = [_bits(a[s], lang) for s in seeds], [_bits(b[s], lang) for s in seeds]
        boot = stats.bootstrap_difference(va, vb, items, ba if all(ba) else None, bb if all(bb) else None)
        return {**boot, "p": test["p"], "tLow": test["low"], "tHigh": test["high"]}
    return test


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
            cells = {lang: _cell(list(seeds.values()), lang, split) for lang in languages}
            accuracy[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
            if task != BASELINE and BASELINE in by_task:
                cells = {lang: _paired(seeds, by_task[BASELINE], lang, split) for lang in languages}
                gains[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
            if task.endswith(MLM_ARM) and plain_task(task) in by_task:  # the ablation against plain STILTs
                cells = {lang: _paired(seeds, by_task[plain_task(task)], lang, split) for lang in languages}
                ablation[f"{backbone}/{task}"] = {k: v for k, v in cells.items() if v}
    architecture = {r.backbone: r.architecture for r in inputs.runs}
    for moe in sorted(b for b, a in architecture.items() if a == "moe"):
        dense, how = comparator(moe, inputs.runs)
        if not dense or BASELINE not in by[moe] or BASELINE not in by[dense]:
            continue
        for task in sorted(set(by[moe]) & set(by[dense]) - {BASELINE}):
            interaction[f"{moe}-vs-{dense}/{task}"] = _interaction(by, moe, dense, task, languages, split, how)
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
            "architecture": architecture,
            "alignment": inputs.alignment, "predicted": predicted, "labels": inputs.labels,
            "constantPredictors": flags, "targetDataNotes": notes, "missing": inputs.missing,
            "runs": len(inputs.runs)}


def _interaction(by: dict, moe: str, dense: str, task: str, languages: list[str], split: str, how: str) -> dict:
    per_lang, pvalues = {}, {}
    for lang in languages:
        gm = {s: _value(r, lang, split) - _value(by[moe][BASELINE][s], lang, split)
              for s, r in by[moe][task].items() if s in by[moe][BASELINE]}
        gd = {s: _value(r, lang, split) - _value(by[dense][BASELINE][s], lang, split)
              for s, r in by[dense][task].items() if s in by[dense][BASELINE]}
        seeds = sorted(set(gm) & set(gd))
        if not seeds:
            continue
        paired = stats.t_interval([gm[s] - gd[s] for s in seeds])
        pooled = stats.pooled_interaction({
            "moe_task": [_value(r, lang, split) for r in by[moe][task].values()],
            "moe_base": [_value(r, lang, split) for r in by[moe][BASELINE].values()],
            "dense_task": [_value(r, lang, split) for r in by[dense][task].values()],
            "dense_base": [_value(r, lang, split) for r in by[dense][BASELINE].values()]})
        per_lang[lang] = {"paired": paired, "pooled": pooled}
        if lang != AVG:
            pvalues[lang] = paired["p"]
    adjusted = stats.holm(pvalues)
    for lang, p in adjusted.items():
        per_lang[lang]["paired"]["pHolm"] = p
    avg = per_lang.get(AVG, {}).get("paired", {})
    mdi = stats.minimum_detectable(avg["n"], avg["sd"]) if avg.get("sd") else None
    return {"languages": per_lang, "comparison": how, "minimumDetectable": mdi}


def excludes_zero(ci: dict) -> bool:
    return ci.get("low") is not None and (ci["low"] > 0 or ci["high"] < 0)


def plan_power(seeds: int, sd: float = ASSUMED_SEED_SD) -> str:
    """What `stilts plan` says about the grid's power before any run."""
    mdi = stats.minimum_detectable(seeds, sd / 100)
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
        lines += ["", "95% intervals of the average (bootstrap over seeds and test items):"]
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
        lines += ["", "Gain over the backbone's baseline (points), mean [95% interval, seeds and items]", ""]
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
        lines += ["", "Research question: gain(MoE) - gain(dense), points, mean [95% interval]", ""]
        for key, result in sorted(report["interaction"].items()):
            avg = result["languages"].get(AVG)
            if not avg:
                continue
            paired, pooled = avg["paired"], avg["pooled"]
            if paired["low"] is None:
                verdict = "one seed: no interval, no conclusion"
            elif excludes_zero(paired):
                verdict = "interval excludes 0: the gain differs between MoE and dense"
            else:
                verdict = "interval includes 0: no evidence the gain differs"
            lines.append(f"  {key}: paired by seed {_fmt(paired, sign=True)}; pooled two-way "
                         f"{_fmt(pooled, sign=True)}  -> {verdict}")
            lines.append(f"    compared {result['comparison']}")
            if result["minimumDetectable"]:
                lines.append(f"    smallest difference these seeds detect (80% power): "
                             f"{result['minimumDetectable'] * 100:.1f} points")
            sig = [lang for lang, r in result["languages"].items() if lang != AVG and r["paired"].get("pHolm", 1) < 0.05]
            lines.append("    per language, after Holm's adjustment over languages: "
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
