"""The demo as a benchmark: run `stilts run examples/demo.yaml` from an empty root and say where the
wall time goes.

For every job: its wall time in the executor (created -> finished), the trainer's own work (the
summary's `seconds`: data, model, training, evaluation), and the rest, which is process start,
imports and DeepSpeed's initialisation. Then the critical path: the pretrain job runs alone, the
others two at a time on two cores.

    .venv/bin/python benchmarks/demo_time.py [--spec examples/demo.yaml]
    .venv/bin/python benchmarks/demo_time.py --smoke   # the demo's grid cut down (a check, no figures)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def smoke_spec(directory: Path) -> Path:
    """The demo's spec with every kind of job it runs, each fewer and shorter: one seed (no looks
    adding seeds), one intermediate task, three languages, tens of steps. Derived from the demo, so it
    follows its changes."""
    import yaml

    doc = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    spec = doc["spec"]
    spec.pop("answer", None)  # it numbers the seeds itself, two at least
    spec.update(seeds=spec.get("seeds", [1])[:1], intermediateTasks=spec["intermediateTasks"][:1])
    spec["target"]["languages"] = ["de", "en", "sw"]
    for phase, steps in (("pretrain", 20), ("intermediate", 10), ("target", 10)):
        spec["training"][phase]["maxSteps"] = steps
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo-smoke.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "examples" / "demo.yaml"))
    parser.add_argument("--root", default="", help="checkpoint root (default: a new temporary directory)")
    parser.add_argument("--smoke", action="store_true", help="a cut-down demo instead of --spec (the suite runs it)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="stilts-demo-"))
    if args.smoke:
        args.spec = str(smoke_spec(root))
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "stilts.cli", "run", args.spec, "--root", str(root)],
                            capture_output=True, text=True)
    wall = time.time() - started
    if result.returncode != 0:
        sys.exit(f"the demo failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    run_dir = next(p.parent for p in root.glob("*/plan.json"))
    rows = json.loads((run_dir / "plan.json").read_text())["jobs"]
    per_phase: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        complete = Path(row["directory"]) / "COMPLETE"
        if not (row.get("created") and row.get("finished") and complete.is_file()):
            continue
        work = json.loads(complete.read_text()).get("seconds", 0.0)
        per_phase[row["phase"]].append((row["finished"] - row["created"], work))
    print(f"demo grid: {len(rows)} jobs, {wall:.0f} s wall from an empty root, report included")
    print(f"{'phase':<13}{'jobs':>5}{'wall s/job':>12}{'work s/job':>12}{'start+init s/job':>18}")
    for phase in ("pretrain", "intermediate", "target", "evaluate"):
        jobs = per_phase.get(phase, [])
        if jobs:
            w = sum(j[0] for j in jobs) / len(jobs)
            k = sum(j[1] for j in jobs) / len(jobs)
            print(f"{phase:<13}{len(jobs):>5}{w:>12.1f}{k:>12.1f}{w - k:>18.1f}")
    pretrain = sum(j[0] for j in per_phase.get("pretrain", []))
    rest = sum(j[0] for p, jobs in per_phase.items() if p != "pretrain" for j in jobs)
    print(f"critical path: pretrain {pretrain:.0f} s alone, then {rest:.0f} job-seconds on 2 slots "
          f"(~{rest / 2:.0f} s); the remainder ({wall - pretrain - rest / 2:.0f} s) is start-up, waiting and the report")


if __name__ == "__main__":
    main()
