"""The report's figures: heatmap.png (accuracy per arm and language) and answer.png (the research
question: gain(MoE) - gain(dense) per comparison and language, with the report's intervals and claims,
and with a sequential design each look's interval narrowing toward the target).

Every number drawn is one report.build computed: `answer_data` picks them out of the report (plain
dicts, kept in report.json as "answerFigure"), and `answer_figure` only draws those. Nothing here
computes an interval. Matplotlib's Agg canvas, no pyplot state, so drawing is safe anywhere.
"""

from __future__ import annotations

from pathlib import Path

from . import report as report_module

AVG = report_module.AVG
FIGURES = ("heatmap.png", "answer.png")
WHY_STOPPED = {"decided": "every comparison is decided",
               "precise enough": "every comparison is decided or precise enough",
               "budget reached": "the seeds reached the maximum",
               "continue": "a comparison is still open",
               "nothing to compare": "no comparison left to answer"}
MOE, DENSE, INTERACTION = "tab:orange", "tab:blue", "black"


def write(report: dict, out_dir: Path) -> list[Path]:
    """heatmap.png when the report has runs, answer.png when it has comparisons; a figure that does not
    apply any more is removed, so every figure in out_dir is this report's. Returns the paths written."""
    written = []
    for name, draw, applies in (("heatmap.png", heatmap, bool(report.get("accuracy"))),
                                ("answer.png", answer_png, bool(report.get("interaction")))):
        path = out_dir / name
        if applies:
            draw(report, path)
            written.append(path)
        elif path.exists():
            path.unlink()
    return written


# -- heatmap ------------------------------------------------------------------------------------------

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


# -- the answer: data ---------------------------------------------------------------------------------

def _interval(ci: dict | None) -> dict | None:
    """An interval of the report as plotted: its mean and bounds (fractions, as in report.json; the
    drawing shows points). low/high are None where the report gave no interval."""
    if not ci:
        return None
    return {"mean": ci["mean"], "low": ci.get("low"), "high": ci.get("high")}


def _arms(key: str, architecture: dict) -> tuple[str, str, str]:
    """(moe, dense, task) of a comparison's key "<moe>-vs-<dense>/<task>" (report._comparisons), split
    where both sides are backbones of the report."""
    pair, _, task = key.rpartition("/")
    for moe in architecture:
        if pair.startswith(f"{moe}-vs-") and pair[len(moe) + 4:] in architecture:
            return moe, pair[len(moe) + 4:], task
    moe, _, dense = pair.partition("-vs-")
    return moe, dense, task


def answer_data(report: dict) -> dict | None:
    """What answer.png plots, taken from the report: per comparison, the average and each language's
    interaction (paired by seed where seeds pair, else the pooled contrast, which claims nothing),
    whether the report claims it, and the MoE and dense gains; with a sequential design, each look's
    interval and half-width against the target and why the design stopped. None without comparisons."""
    if not report.get("interaction"):
        return None
    languages = [AVG] + [lang for lang in report["languages"] if lang != AVG]
    comparisons = []
    for key, result in sorted(report["interaction"].items()):
        moe, dense, task = _arms(key, report.get("architecture", {}))
        rows = []
        for lang in languages:
            cell = result["languages"].get(lang)
            if not cell:
                continue
            paired = cell.get("paired")
            chosen = paired or cell.get("pooled")
            rows.append({"language": lang,
                         "interaction": {**_interval(chosen), "kind": "paired" if paired else "pooled",
                                         "n": chosen.get("n"), "claimed": bool((paired or {}).get("claimed"))},
                         "moeGain": _interval(report["gain"].get(f"{moe}/{task}", {}).get(lang)),
                         "denseGain": _interval(report["gain"].get(f"{dense}/{task}", {}).get(lang))})
        comparisons.append({"key": key, "moe": moe, "dense": dense, "task": task,
                            "comparison": result.get("comparison", ""), "rows": rows})
    return {"level": report["level"], "levelWords": report_module._level_words(report),
            "split": report["split"], "languages": languages, "comparisons": comparisons,
            "sequential": _sequential_data(report.get("answer"))}


def _sequential_data(a: dict | None) -> dict | None:
    if not a:
        return None
    keys = sorted({k for look in a["looks"] for k in look["comparisons"]})
    stopped = bool(a["looks"]) and a["decision"] != "continue"
    return {"targetHalfWidth": a["design"]["targetHalfWidth"], "maxSeeds": a["design"]["maxSeeds"],
            "look": a["look"], "seeds": a["seeds"], "decision": a["decision"], "stopped": stopped,
            "reason": WHY_STOPPED.get(a["decision"], a["decision"]),
            "states": {k: "decided" if c["decided"] else "precise enough" if c["precise"] else "open"
                       for k, c in a["comparisons"].items()},
            "comparisons": {k: [{"look": look["look"], "seeds": look["seeds"], "level": look["level"],
                                 **_interval(look["comparisons"][k]), "halfWidth": look["comparisons"][k]["halfWidth"],
                                 "decided": bool(look["comparisons"][k].get("decided"))}
                                for look in a["looks"] if k in look["comparisons"]] for k in keys}}


# -- the answer: drawing ------------------------------------------------------------------------------

def _points(v: float | None) -> float | None:
    return None if v is None else v * 100


def _errorbar(ax, x: dict, y: float, role: str, lang: str, color: str, filled: bool, size: float, width: float,
              marker: str = "o"):
    """One interval, horizontal, at row y (points). Labelled "_<role>:<lang>" (kept out of the legend) so
    a test can find the artist that drew it."""
    mean = x["mean"] * 100
    err = None if x["low"] is None else [[mean - x["low"] * 100], [x["high"] * 100 - mean]]
    ax.errorbar([mean], [y], xerr=err, fmt=marker, color=color, ms=size, lw=width, capsize=0,
                mfc=color if filled else "white", mec=color, label=f"_{role}:{lang}", zorder=3)


def answer_figure(data: dict):
    """answer.png as a matplotlib Figure (Agg): a row of forest plots, one per comparison, and with a
    sequential design a row of its looks below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    comparisons, sequential = data["comparisons"], data["sequential"]
    looks_row = bool(sequential and sequential["comparisons"])
    languages = data["languages"]
    # the average on top, a gap, then the languages
    position = {lang: (0 if lang == AVG else i + 0.6) for i, lang in enumerate(languages)}
    heights = [1.3 + 0.36 * len(languages)] + ([3.0] if looks_row else [])
    fig = Figure(figsize=(1.4 + 4.2 * len(comparisons), sum(heights) + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    rows = fig.subfigures(len(heights), 1, height_ratios=heights) if looks_row else [fig]
    top = rows[0]
    forest = top.subplots(1, len(comparisons), sharex=True, sharey=True, squeeze=False)[0]
    for ax, comp in zip(forest, comparisons):
        ax.axvline(0, color="grey", lw=0.8, zorder=1)
        ax.axhline(0.8, color="lightgrey", lw=0.6, zorder=1)
        for row in comp["rows"]:
            y, lang, inter = position[row["language"]], row["language"], row["interaction"]
            if inter["claimed"]:
                ax.axhspan(y - 0.45, y + 0.45, color="gold", alpha=0.25, lw=0, zorder=0)
            if row["moeGain"]:
                _errorbar(ax, row["moeGain"], y - 0.26, "moeGain", lang, MOE, True, 3, 0.9)
            if row["denseGain"]:
                _errorbar(ax, row["denseGain"], y + 0.26, "denseGain", lang, DENSE, True, 3, 0.9)
            pooled = inter["kind"] == "pooled"
            _errorbar(ax, inter, y, "interaction", lang, "dimgrey" if pooled else INTERACTION, inter["claimed"],
                      6 if lang == AVG else 5, 2.2 if inter["claimed"] else 1.4, marker="D" if pooled else "o")
        ax.set_xlabel("points")
        ax.set_title(f"{comp['key']}\n({comp['comparison']})" if comp["comparison"] else comp["key"], fontsize=9)
        ax.grid(axis="x", color="whitesmoke", zorder=0)
    forest[0].set_yticks([position[lang] for lang in languages],
                         ["average" if lang == AVG else lang for lang in languages])
    forest[0].set_ylim(max(position.values()) + 0.7, -0.7)
    top.suptitle(f"Does STILTs help MoE and dense equally? gain(MoE) - gain(dense) on XNLI {data['split']}, "
                 f"mean [{data['levelWords']} interval]", fontsize=11)
    handles = [Line2D([], [], color=INTERACTION, marker="o", mfc=INTERACTION, lw=2.2,
                      label="gain(MoE) - gain(dense), claimed"),
               Line2D([], [], color=INTERACTION, marker="o", mfc="white", lw=1.4, label="... not claimed"),
               Patch(color="gold", alpha=0.25, label="claimed by the report"),
               Line2D([], [], color=MOE, marker="o", ms=3, lw=0.9, label="gain of the MoE backbone"),
               Line2D([], [], color=DENSE, marker="o", ms=3, lw=0.9, label="gain of the dense backbone")]
    if any(r["interaction"]["kind"] == "pooled" for c in comparisons for r in c["rows"]):
        handles.append(Line2D([], [], color="dimgrey", marker="D", mfc="white", lw=1.4,
                              label="pooled two-way (no seed pairs): no claim"))
    if looks_row:
        _looks(rows[1], comparisons, sequential, handles)
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def _looks(sub, comparisons: list[dict], sequential: dict, handles: list) -> None:
    """Each look's interval of a comparison's average against the seeds it had, inside a band of the
    target's width around its mean (an interval inside its band is precise enough), and where it stopped."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    target = sequential["targetHalfWidth"] * 100
    axes = sub.subplots(1, len(comparisons), squeeze=False)[0]
    for j, (ax, comp) in enumerate(zip(axes, comparisons)):
        looks = sequential["comparisons"].get(comp["key"], [])
        ax.axhline(0, color="grey", lw=0.8, zorder=1)
        for look in looks:
            mean = look["mean"] * 100
            ax.bar([look["seeds"]], [2 * target], bottom=[mean - target], width=0.5, color="lightgrey", alpha=0.5,
                   zorder=0)
            err = None if look["low"] is None else [[mean - look["low"] * 100], [look["high"] * 100 - mean]]
            ax.errorbar([look["seeds"]], [mean], yerr=err, fmt="o", color=INTERACTION, ms=5, capsize=3,
                        mfc=INTERACTION if look["decided"] else "white", label=f"_look:{look['look']}", zorder=3)
            if look["halfWidth"] is not None:
                ax.annotate(f"±{look['halfWidth'] * 100:.1f}", (look["seeds"], look["high"] * 100),
                            textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
        if sequential["stopped"] and looks:
            ax.axvline(looks[-1]["seeds"], color="firebrick", ls=":", lw=1)
        ax.set_xlim(min([lk["seeds"] for lk in looks], default=1) - 0.8, sequential["maxSeeds"] + 0.8)
        ax.margins(y=0.12)
        ax.set_xlabel("seeds at the look")
        if not j:
            ax.set_ylabel("average, points")
        ax.set_title(f"{comp['key']}: {sequential['states'].get(comp['key'], '')}", fontsize=9)
    state = (f"stopped after look {sequential['look']} ({sequential['seeds']} seeds): {sequential['reason']}"
             if sequential["stopped"] else
             f"look {sequential['look']} ({sequential['seeds']} seeds) continued: {sequential['reason']}")
    sub.suptitle(f"Sequential design, each look's interval of the average: {state}", fontsize=10)
    handles += [Line2D([], [], color=INTERACTION, marker="o", mfc="white", label="a look's interval (filled: decided)"),
                Patch(color="lightgrey", alpha=0.5, label=f"target: ±{target:.1f} points around the look's mean")]
    if sequential["stopped"]:
        handles.append(Line2D([], [], color="firebrick", ls=":", label="where the design stopped"))


def answer_png(report: dict, path: Path) -> dict | None:
    """answer.png from the report; returns the data plotted (None, and no file, without comparisons)."""
    data = answer_data(report)
    if data is None:
        return None
    answer_figure(data).savefig(path, dpi=110)
    return data
