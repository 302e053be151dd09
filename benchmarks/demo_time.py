"""The demo as a benchmark: run `stilts run examples/demo.yaml` from an empty root and say where the
wall time goes.

For every job: its wall time in the executor (created -> finished), the trainer's own work (the
summary's `seconds`: data, model, training, evaluation), and the rest, which is process start,
imports and DeepSpeed's initialisation. Then the critical path: the pretrain job runs alone, the
others two at a time on two cores.

    .venv/bin/python benchmarks/demo_time.py [--spec examples/demo.yaml]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "examples" / "demo.yaml"))
    parser.add_argument("--root", default="", help="checkpoint root (default: a new temporary directory)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="stilts-demo-"))
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
