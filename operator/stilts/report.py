"""Report: XNLI accuracy per (backbone, intermediate task) and language, the gain over each backbone's
baseline, and the research question as an interaction: gain(MoE) - gain(dense), paired by seed."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom; the normal quantile beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def mean_interval(values: list[float]) -> dict:
    """Mean with a 95% t interval (no interval from one seed)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    half = t * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def excludes_zero(ci: dict) -> bool:
    return ci["low"] is not None and (ci["low"] > 0 or ci["high"] < 0)


def collect(run_dir: Path, split: str = "test") -> tuple[dict, dict]:
    """(accuracy[backbone][task][seed][language], architecture[backbone]) from a run's plan.json."""
    manifest = json.loads((run_dir / "plan.json").read_text())
    acc: dict = defaultdict(lambda: defaultdict(dict))
    arch: dict[str, str] = {}
    for row in manifest["jobs"]:
        if row["phase"] != "evaluate":
            continue
        results = Path(row["directory"]) / "results.json"
        if not results.is_file():
            continue
        labels = row["labels"]
        data = json.loads(results.read_text())
        langs = {lang: v[split] for lang, v in data["languages"].items()}
        langs["avg"] = statistics.fmean(langs.values())
        acc[labels["backbone"]][labels["intermediateTask"]][int(labels["seed"])] = langs
        job = json.loads((Path(row["directory"]) / "job.json").read_text())
        arch[labels["backbone"]] = job["backbone"]["architecture"]
    return acc, arch


def gain_by_seed(runs: dict[int, dict], baseline: dict[int, dict], lang: str) -> dict[int, float]:
    """Accuracy minus the same seed's baseline accuracy."""
    return {s: runs[s][lang] - baseline[s][lang] for s in sorted(set(runs) & set(baseline))
            if lang in runs[s] and lang in baseline[s]}


def build(run_dir: Path, split: str = "test") -> dict:
    acc, arch = collect(run_dir, split)
    languages = sorted({lang for b in acc.values() for t in b.values() for s in t.values() for lang in s}
                       - {"avg"}) + ["avg"]
    accuracy, gains = {}, {}
    for backbone, by_task in acc.items():
        for task, seeds in by_task.items():
            accuracy[f"{backbone}/{task}"] = {
                lang: mean_interval([v[lang] for v in seeds.values() if lang in v]) for lang in languages}
            if task != "none" and "none" in by_task:
                gains[f"{backbone}/{task}"] = {
                    lang: mean_interval(list(d.values())) for lang in languages
                    if (d := gain_by_seed(seeds, by_task["none"], lang))}
    interaction = {}
    dense = [b for b, a in arch.items() if a == "dense"]
    moe = [b for b, a in arch.items() if a == "moe"]
    for m in moe:
        for d in dense:
            for task in sorted(set(acc[m]) & set(acc[d]) - {"none"}):
                if "none" not in acc[m] or "none" not in acc[d]:
                    continue
                per_lang = {}
                for lang in languages:
                    gm = gain_by_seed(acc[m][task], acc[m]["none"], lang)
                    gd = gain_by_seed(acc[d][task], acc[d]["none"], lang)
                    diffs = [gm[s] - gd[s] for s in sorted(set(gm) & set(gd))]
                    if diffs:
                        per_lang[lang] = mean_interval(diffs)
                interaction[f"{m}-vs-{d}/{task}"] = per_lang
    return {"split": split, "languages": languages, "accuracy": accuracy, "gain": gains,
            "interaction": interaction, "architecture": arch}


def _fmt(ci: dict, scale: float = 100) -> str:
    if ci["low"] is None:
        return f"{ci['mean'] * scale:.1f}"
    return f"{ci['mean'] * scale:.1f} [{ci['low'] * scale:.1f}, {ci['high'] * scale:.1f}]"


def to_text(report: dict) -> str:
    langs = report["languages"]
    lines = [f"XNLI {report['split']} accuracy (%), mean over seeds", ""]
    header = ["backbone/task"] + langs
    rows = [[k] + [f"{v[lang]['mean'] * 100:.1f}" if lang in v else "" for lang in langs]
            for k, v in sorted(report["accuracy"].items())]
    lines += _table([header] + rows)
    if report["gain"]:
        lines += ["", "Gain over the backbone's baseline (points), mean [95% interval over seeds]", ""]
        lines += _table([["backbone/task", "avg"] + [lang for lang in langs if lang != "avg"]]
                        + [[k, _fmt(v["avg"])] + [f"{v[lang]['mean'] * 100:+.1f}" for lang in langs if lang != "avg"]
                           for k, v in sorted(report["gain"].items()) if "avg" in v])
    if report["interaction"]:
        lines += ["", "Research question: gain(MoE) - gain(dense), points, mean [95% interval], paired by seed", ""]
        for key, per_lang in sorted(report["interaction"].items()):
            ci = per_lang.get("avg")
            if not ci:
                continue
            if ci["low"] is None:
                verdict = "one seed: no interval, no conclusion"
            elif excludes_zero(ci):
                verdict = "interval excludes 0: the gain differs between MoE and dense"
            else:
                verdict = "interval includes 0: no evidence the gain differs"
            sig = [lang for lang, c in per_lang.items() if lang != "avg" and excludes_zero(c)]
            lines.append(f"  {key}: {_fmt(ci)}  -> {verdict}"
                         + (f"; per language, excludes 0 for: {', '.join(sig)}" if sig else ""))
    elif report["gain"]:
        lines += ["", "Research question: needs a dense and an MoE backbone, each with a baseline."]
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


def write(run_dir: Path, split: str = "test") -> str:
    report = build(run_dir, split)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    text = to_text(report)
    (run_dir / "report.txt").write_text(text)
    if report["accuracy"]:
        heatmap(report, run_dir / "heatmap.png")
    return text
