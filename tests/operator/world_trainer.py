"""A stand-in trainer whose evaluate jobs score a simulated world with a known truth.

`python tests/operator/world_trainer.py --job job.json` honours the trainer's contract (COMPLETE with a
valid summary, results.json with per-item results, the items' log lines) in milliseconds. Outcomes are a
pure function of the job (backbone, task, seed), so the local executor running it and the cluster
test's pod driver replaying `outcome` for the same job.json see the same world: a sequential design must
take the same looks, and reach the same decision, on both.

The world (tests/operator/simulated_world.py's shape, smaller): item difficulty shared by languages and
arms, seed noise shared by a backbone's runs of one seed, per-run noise, per-(run, item) noise. MoE gains
EFFECTS[task] more than dense on the probit scale: qqp about 9 points, anli nothing.
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "contract"))
from stilts_contract import items as contract_items, summary as summaries  # noqa: E402

LANGUAGES = ("de", "en", "sw")
ITEMS = 400
EFFECTS = {"anli": 0.0, "qqp": 0.45}
SD = {"item": 1.0, "item_lang": 0.5, "item_arm": 0.2, "seed": 0.06, "run": 0.06}


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def correct(backbone: str, architecture: str, task: str, seed: int) -> dict[str, str]:
    """Which test items the run gets right, per language."""
    items = _rng("items").normal(0, SD["item"], ITEMS) + _rng("items-lang").normal(0, SD["item_lang"],
                                                                                  (len(LANGUAGES), ITEMS))
    arm = _rng("arm", architecture, task).normal(0, SD["item_arm"], ITEMS)
    ability = np.linspace(1.0, 0.3, len(LANGUAGES))[:, None] + (0.1 if task != "none" else 0.0)
    if architecture == "moe":
        ability = ability + EFFECTS.get(task, 0.0)
    latent = (ability + items + arm + _rng("seed", architecture, seed).normal(0, SD["seed"])
              + _rng("run", architecture, task, seed).normal(0, SD["run"])
              + _rng("noise", architecture, task, seed).normal(0, 1, (len(LANGUAGES), ITEMS)))
    return {lang: "".join("1" if v > 0 else "0" for v in row) for lang, row in zip(LANGUAGES, latent)}


def outcome(job: dict) -> tuple[dict, dict | None]:
    """(the summary COMPLETE and the termination message carry, results.json or None)."""
    labels = job["labels"]
    summary = {"phase": job["phase"], "jobHash": job["jobHash"], "backbone": job["backbone"]["name"],
               "seed": job.get("seed"), "task": job.get("task"), "seconds": 0.1}
    if job["phase"] != "evaluate":
        return summary, None
    bits = correct(job["backbone"]["name"], job["backbone"].get("architecture", "dense"),
                   labels.get("intermediateTask") or "none", int(labels["seed"]))
    test = {lang: round(b.count("1") / len(b), 4) for lang, b in bits.items()}
    results = {"languages": {lang: {"dev": acc, "test": acc} for lang, acc in test.items()},
               "correct": bits, "predicted": {lang: [0.34, 0.33, 0.33] for lang in bits}}
    summary.update(test=test, testItems=ITEMS, itemsDigest=contract_items.digest(contract_items.encode(bits)),
                   average={"dev": round(float(np.mean(list(test.values()))), 4),
                            "test": round(float(np.mean(list(test.values()))), 4)})
    return summary, results


def log(job: dict) -> str:
    """What the job prints: its items last, as the trainer does."""
    _, results = outcome(job)
    return "\n".join(["world_trainer: done"] + (contract_items.lines(job["jobHash"], results["correct"])
                                                 if results else [])) + "\n"


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[argv.index("--job") + 1]).read_text())
    out = Path(job["output"])
    out.mkdir(parents=True, exist_ok=True)
    summary, results = outcome(job)
    if results:
        (out / "results.json").write_text(json.dumps(results))
    (out / "COMPLETE").write_text(json.dumps(summary))
    sys.stdout.write(log(job))
    assert summaries.parse(summaries.encode(summary), job["jobHash"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
