"""Where an arm's seed-to-seed noise comes from in the offline world (docs/training.md's table).

A seed draws three things in a fine-tuning job: which MNLI examples it trains on (and its dev set),
the order of its batches (and its dropout), and the classification head's initialisation. This script
fine-tunes English MNLI target jobs from one pretrained tiny model with each of the three varied alone
(the other two pinned to seed 1), then all three together as seeds do, evaluates each on XNLI test in
the demo's 15 languages, and prints the SD of the non-English average for each.

The model, the data and the training are the demo's (examples/demo.yaml, dense backbone, no
intermediate task): `stilts run` builds the pretrained model and seed 1's target and evaluate jobs,
and every other run goes through the trainer's own phases in this process, with the seed handed to
one of the three places (`phases.task_data`, `engine.train`, `phases._task_module`). Seed 1 in-process
must reproduce the executor's seed 1 in every language: the script checks it, so what varies is the seed.

    .venv/bin/python benchmarks/seed_noise.py [--runs 6] [--set learningRate=1.6e-3 ...] [--root DIR]
    .venv/bin/python benchmarks/seed_noise.py --smoke   # tiny steps, 2 runs (a check, no figures)

A `--root` kept between calls keeps the pretrained model (the longest job, 1-2 minutes; the fine-tunings
are redone every time); `--set` changes the target jobs' hyperparameters (job.json names), for trying
a lever against the same model. The batch order's seed also seeds dropout, which the demo's model has
at 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACTORS = ("data", "order", "head", "all")  # what varies; "all" is what a seed varies
DESCRIPTION = {"data": "which MNLI examples are drawn", "order": "the order of the training batches",
               "head": "the classification head's initialisation", "all": "all three, as seeds do"}


def spec_for(directory: Path, smoke: bool) -> Path:
    """The demo's spec cut to one backbone, no intermediate task, seed 1: a pretrain, a target and an
    evaluate job."""
    import yaml

    doc = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    doc["metadata"]["name"] = "noise"
    spec = doc["spec"]
    spec.pop("answer", None)
    spec.update(seeds=[1], intermediateTasks=[], baseline=True,
                backbones=[b for b in spec["backbones"] if b["architecture"] == "dense"][:1])
    if smoke:
        spec["target"]["languages"] = ["de", "en", "sw"]
        for phase, steps in (("pretrain", 20), ("target", 10)):
            spec["training"][phase].update(maxSteps=steps, evalEverySteps=steps)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "noise.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def executor_jobs(root: Path) -> dict[str, dict]:
    """The job.json of each phase of the plan `stilts run` just ran (its plan.json: a reused root may hold
    jobs of an older spec too), by phase."""
    plan = json.loads((root / "noise" / "plan.json").read_text())["jobs"]
    jobs = {j["phase"]: json.loads((Path(j["directory"]) / "job.json").read_text()) for j in plan}
    missing = {"pretrain", "target", "evaluate"} - set(jobs)
    if missing:
        sys.exit(f"`stilts run` planned no {sorted(missing)} job under {root / 'noise'}")
    return jobs


def hyperparameters_read(phase: str, task: str) -> set[str]:
    from stilts_contract.job import applicable

    prefix = "hyperparameters."
    return {f[len(prefix):] for f in applicable(phase, task, "dense", False) if f.startswith(prefix)}


def test_accuracy(directory: Path) -> dict[str, float]:
    results = json.loads((directory / "results.json").read_text())
    return {lang: r["test"] for lang, r in results["languages"].items()}


def install_seams(pinned: dict[str, int]):
    """Hand each of the three places a seed takes effect its own seed (`pinned`, looked up per call)."""
    from stilts_trainer import engine, phases

    task_data, train, task_module = phases.task_data, engine.train, phases._task_module

    def with_seed(job, factor: str):
        return job.model_copy(update={"seed": pinned[factor]})

    phases.task_data = lambda name, job, *a, **k: task_data(name, with_seed(job, "data"), *a, **k)
    phases._task_module = lambda job, *a, **k: task_module(with_seed(job, "head"), *a, **k)
    engine.train = lambda job, *a, **k: train(with_seed(job, "order"), *a, **k)


def fine_tune(templates: dict[str, dict], out: Path, seeds: dict[str, int], overrides: dict,
              log: Path, pinned: dict[str, int]) -> dict[str, float]:
    """One target job and its evaluation, in this process, with `seeds` where they take effect (seed 1
    elsewhere); per-language test accuracy."""
    from stilts_trainer import phases
    from stilts_trainer.job import parse

    pinned.update(dict.fromkeys(pinned, 1), **seeds)  # seed 1 wherever `seeds` says nothing
    target = with_overrides(templates["target"], overrides, output=str(out / "target"))
    evaluate = with_overrides(templates["evaluate"], overrides, output=str(out / "evaluate"), parent=target["output"])
    with open(log, "a") as handle, contextlib.redirect_stdout(handle):  # the items lines are for a cluster
        phases.run(parse(target))
        phases.run(parse(evaluate))
    return test_accuracy(out / "evaluate")


def check_overrides(overrides: dict) -> None:
    """Before any job runs: each key one a target job reads, each value one its contract accepts."""
    from pydantic import ValidationError
    from stilts_contract.job import Hyperparameters, first_error

    known = hyperparameters_read("target", "mnli")
    unknown = sorted(set(overrides) - known)
    if unknown:
        sys.exit(f"--set {unknown[0]}: not a hyperparameter a target job reads; one of {sorted(known)}")
    try:
        Hyperparameters.model_validate(overrides)
    except ValidationError as error:
        where, message = first_error(error)
        sys.exit(f"--set {where}: {message}")


def with_overrides(template: dict, overrides: dict, **fields) -> dict:
    """A job.json from the executor's, with the `--set` hyperparameters its phase reads (the evaluate job
    reads the sequence length and the batch too)."""
    read = hyperparameters_read(template["phase"], template["task"])
    return dict(template, **fields, hyperparameters={**template["hyperparameters"],
                                                     **{k: v for k, v in overrides.items() if k in read}})


def non_english(acc: dict[str, float]) -> float:
    values = [v for lang, v in acc.items() if lang != "en"]
    return 100 * sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="runs per factor, seed 1 included (default 6)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a target hyperparameter, as job.json names it (value read as JSON)")
    parser.add_argument("--root", default="", help="work directory (kept: the pretrained model is reused)")
    parser.add_argument("--smoke", action="store_true", help="tiny steps and 2 runs (the suite runs it)")
    args = parser.parse_args()
    runs = 2 if args.smoke else args.runs
    if runs < 2:
        parser.error("--runs: an SD needs 2 runs at least")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE, for example learningRate=1.6e-3")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"--set {item!r}: the value must be JSON (a number, true/false, a quoted string)")
    check_overrides(overrides)
    root = Path(args.root or tempfile.mkdtemp(prefix="stilts-noise-"))
    started = time.time()
    run = subprocess.run([sys.executable, "-m", "stilts.cli", "run", str(spec_for(root, args.smoke)), "--root",
                          str(root)], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"`stilts run` failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    templates = executor_jobs(root)
    print(f"pretrained model and seed 1 by `stilts run`: {time.time() - started:.0f} s ({root})")

    logging.disable(logging.INFO)  # the trainer's per-step lines; warnings still show
    import transformers

    transformers.logging.set_verbosity_error()  # each load's report of the unused masked-LM head
    transformers.logging.disable_progress_bar()
    pinned = {"data": 1, "order": 1, "head": 1}
    install_seams(pinned)
    work = root / ("noise-runs-" + "-".join(f"{k}={v}" for k, v in sorted(overrides.items())) if overrides
                   else "noise-runs")
    shutil.rmtree(work, ignore_errors=True)  # a finished job is never rerun: old runs would come back as new
    log = root / "noise-runs.log"
    executor_seed1 = test_accuracy(Path(templates["evaluate"]["output"]))
    reference = fine_tune(templates, work / "seed-1", {}, overrides, log, pinned)
    if not overrides and reference != executor_seed1:
        sys.exit(f"seed 1 in this process ({non_english(reference):.2f}) differs from the executor's "
                 f"({non_english(executor_seed1):.2f}): the runs below would not measure the seed alone")
    rows = []
    for factor in FACTORS:
        accs = [reference]
        for seed in range(2, runs + 1):
            seeds = {f: seed for f in pinned} if factor == "all" else {factor: seed}
            t = time.time()
            accs.append(fine_tune(templates, work / f"{factor}-{seed}", seeds,
                                  overrides, log, pinned))
            print(f"  {factor} seed {seed}: English {100 * accs[-1]['en']:.1f}, non-English "
                  f"{non_english(accs[-1]):.1f} ({time.time() - t:.0f} s)", flush=True)
        non = [non_english(a) for a in accs]
        english = [100 * a["en"] for a in accs]
        per_language = [statistics.stdev(100 * a[lang] for a in accs) for lang in reference if lang != "en"]
        rows.append((factor, len(accs), statistics.mean(english), statistics.mean(non), statistics.stdev(non),
                     min(per_language), max(per_language)))

    print(f"\nSD of the non-English average over {runs} runs (target hyperparameters: "
          f"{overrides or 'the demo'}; seed 1 in-process matches the executor's: "
          f"{'not compared (--set)' if overrides else 'yes'})")
    print("| what varies (everything else seed 1) | runs | English | non-English | SD | per-language SD |")
    print("|---|---|---|---|---|---|")
    for factor, n, english, non, sd, low, high in rows:
        print(f"| {DESCRIPTION[factor]} | {n} | {english:.1f} | {non:.1f} | {sd:.2f} | {low:.1f}-{high:.1f} |")
    print(f"\nwall: {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
