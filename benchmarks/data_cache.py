"""Tokenize once per experiment (trainer/stilts_trainer/feature_cache.py): time to the first optimizer
step and peak memory per rank, 2 processes, before and after.

The hub path, offline: a mirror in the hub's layout holds `--pairs` synthetic MNLI pairs (default
400,000, MNLI's size; the offline world's sentences are shorter than MNLI's, about 10 words), and a
tiny pretrained XLM-R stands in for the hub model. Each scenario launches a real 2-process target job
and stops it at its first optimizer step:

- cache off: every rank loads and encodes the whole training set (stilts before the cache);
- first job: rank 0 encodes and writes the cache, both ranks map it;
- second job: both ranks map the entry the first job wrote;
- second job at a quarter of the data: memory per rank should not depend on the dataset's size;
- the multi-task mix (synthetic data, nine tasks), cache off and second job.

    .venv/bin/python benchmarks/data_cache.py [--pairs 400000]
    .venv/bin/python benchmarks/data_cache.py --smoke   # 4,000 pairs: every scenario, no figures (a check)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stilts_contract.names import PROGRESS  # noqa: E402
from stilts_trainer import synthetic, tasks  # noqa: E402
from tests.conftest import job_body, run_trainer, trainer_command  # noqa: E402
from tests.trainer.test_data import write_hub_layout  # noqa: E402

MODEL = "FacebookAI/xlm-roberta-base"
HP = {"maxSteps": 1000, "evalEverySteps": 100000, "evalExamples": 200, "batchSize": 32, "microBatchSize": 16,
      "maxSeqLength": 64}


def descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(entry.name))
    return children


def peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def first_step(job: dict, workdir: Path, name: str, env: dict | None = None) -> tuple[float, float, list[float]]:
    """Seconds from launch to the first optimizer step, seconds rank 0 spent getting its training data
    ready (its log), and each rank's peak RSS (MiB) until the first step."""
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(job))
    progress = Path(job["output"]) / PROGRESS
    started = time.perf_counter()
    log = workdir / f"{name}.log"
    process = subprocess.Popen(trainer_command(path, 2), env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=log.open("w"))
    peaks: dict[int, int] = {}
    try:
        while True:
            for pid in descendants(process.pid):
                peaks[pid] = max(peaks.get(pid, 0), peak_kib(pid))
            if progress.is_file() and json.loads(progress.read_text() or "{}").get("step", 0) >= 1:
                seconds = time.perf_counter() - started
                ready = re.search(r"training data ready in ([0-9.]+) s", log.read_text())
                return seconds, float(ready.group(1)) if ready else float("nan"), sorted(v / 1024 for v in peaks.values())
            if process.poll() is not None:
                sys.exit(f"{name}: the job ended before its first step: {log.read_text()[-2000:]}")
            time.sleep(0.05)
    finally:
        # Ranks run in sessions of their own (torch's launcher): stop each, then the launcher.
        for pid in descendants(process.pid) + [process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=400_000)
    parser.add_argument("--smoke", action="store_true", help="4,000 pairs (the suite runs it)")
    args = parser.parse_args()
    if args.smoke:
        args.pairs = 4000
    work = Path(tempfile.mkdtemp(prefix="stilts-data-cache-"))
    try:
        pretrain = work / "pretrain"
        r = run_trainer(job_body("pretrain", pretrain, hyperparameters={"maxSteps": 20, "batchSize": 64,
                                                                        "microBatchSize": 64, "maxSeqLength": 48}),
                        work, name="pretrain.json")
        if r.returncode:
            sys.exit(r.stderr[-2000:])
        mirror = work / "mirror"
        shutil.copytree(pretrain / "model", mirror / "models" / MODEL)
        pairs, seed = [], 0
        while len(pairs) < args.pairs:
            pairs += synthetic.nli_examples(1000 + seed, 8000)
            seed += 1
        mnli = tasks.get("mnli")
        write_hub_layout(mirror, "nyu-mll/glue", {"mnli": {"train": pairs[:args.pairs],
                                                           "validation_matched": mnli.synthetic("dev", 1, "en"),
                                                           "validation_mismatched": mnli.synthetic("test", 1, "en")}})
        del pairs
        cache = work / "cache"
        hub = {"dataSource": "hub", "mirror": str(mirror), "cacheDir": str(cache),
               "backbone": {"name": "dense", "model": MODEL}}

        def target(name: str, limit: int = 0) -> dict:
            return job_body("target", work / name, None, task="mnli", hyperparameters={**HP, "maxTrainExamples": limit},
                            **hub)

        rows = [("cache off (every rank encodes)", *first_step(target("off"), work, "off", {"STILTS_FEATURE_CACHE": "off"})),
                ("first job (rank 0 encodes, writes)", *first_step(target("cold"), work, "cold")),
                ("second job (maps the cache)", *first_step(target("warm"), work, "warm"))]
        quarter = args.pairs // 4
        first_step(target("cold-q", quarter), work, "cold-q")
        rows.append((f"second job, {quarter:,} pairs", *first_step(target("warm-q", quarter), work, "warm-q")))

        mix = {"cacheDir": str(cache), "hyperparameters": {**HP, "maxSeqLength": 64}}
        multitask = lambda name: job_body("intermediate", work / name, pretrain, task="multitask", **mix)  # noqa: E731
        rows.append(("multitask, cache off", *first_step(multitask("mt-off"), work, "mt-off",
                                                          {"STILTS_FEATURE_CACHE": "off"})))
        first_step(multitask("mt-cold"), work, "mt-cold")
        rows.append(("multitask, second job", *first_step(multitask("mt-warm"), work, "mt-warm")))

        size = sum(p.stat().st_size for p in (cache / "stilts-features").rglob("*") if p.is_file())
        print(f"2 processes, {args.pairs:,} MNLI pairs from a hub-layout mirror (synthetic sentences), tiny XLM-R, "
              f"{os.cpu_count()} cores; from launch to the first optimizer step (of which rank 0 getting its "
              "training data ready), peak RSS per rank")
        for label, seconds, ready, peaks in rows:
            print(f"  {label:<38} {seconds:7.1f} s (data {ready:6.2f} s)   ranks "
                  f"{' / '.join(f'{p:.0f}' for p in peaks)} MiB")
        (_, off, off_data, off_peaks), (_, _, _, _), (_, warm, warm_data, warm_peaks) = rows[:3]
        print(f"second job vs cache off: first step {off / warm:.1f}x sooner, training data ready "
              f"{off_data / warm_data:.0f}x sooner; multitask: {rows[4][1] / rows[5][1]:.1f}x, data "
              f"{rows[4][2] / rows[5][2]:.0f}x")
        print(f"peak RSS per rank, second job: {max(warm_peaks):.0f} MiB at {args.pairs:,} pairs, "
              f"{max(rows[3][3]):.0f} MiB at {quarter:,}; cache off: {max(off_peaks):.0f} MiB")
        print(f"cache on the volume: {size / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
