"""The README's main command, for real: `stilts run examples/demo.yaml`, interrupted once and resumed."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, holding

pytestmark = pytest.mark.slow


def test_demo_interrupted_then_resumed_ends_with_the_report(tmp_path):
    cmd = [sys.executable, "-m", "stilts.cli", "run", str(REPO / "examples" / "demo.yaml"), "--root", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # As from a terminal: SIGINT at its default, whatever this test run inherited (a shell's background
    # job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt).
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in first.stdout:  # interrupt once the first job is done and others are running
        seen.append(line)
        if "finished" in line:
            time.sleep(3)
            first.send_signal(signal.SIGINT)
            break
    rest, _ = first.communicate(timeout=120)
    assert first.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert not holding(tmp_path), "no trainer left behind"

    # Every job the first run reported finished is skipped (and any that completed as it stopped,
    # before it could say so).
    finished = sum(" finished " in line for line in ("".join(seen) + rest).splitlines())
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert second.returncode == 0, second.stdout[-4000:]
    skipped = re.search(r"(\d+) already complete", second.stdout)
    assert skipped and int(skipped.group(1)) >= finished >= 1, (finished, second.stdout[:400])
    run_dir = tmp_path / "demo"
    assert (run_dir / "heatmap.png").stat().st_size > 10_000
    manifest = json.loads((run_dir / "plan.json").read_text())
    assert all(row["status"] == "Succeeded" for row in manifest["jobs"])
    report = json.loads((run_dir / "report.json").read_text())
    assert_the_demo_shows_transfer(report)
    assert_the_demo_ran_its_design(report, manifest)
    # `stilts logs DIR JOB`: a job's log by its name, as `stilts status` lists it.
    logs = subprocess.run([sys.executable, "-m", "stilts.cli", "logs", str(run_dir), "dense-pretrain"],
                          capture_output=True, text=True)
    assert logs.returncode == 0 and "word-translation retrieval" in logs.stdout and "done:" in logs.stdout, logs


def assert_the_demo_shows_transfer(report: dict) -> None:
    """What the README promises of the demo: English learned, every other language transfers above chance
    without a constant predictor, and transfer follows the designed similarity of the languages. The
    properties, not the numbers: a break in cross-lingual evaluation fails here."""
    from stilts_trainer.synthetic import SIMILARITY_GROUPS
    chance = 1 / 3
    accuracy = report["accuracy"]
    assert len(report["languages"]) == 16 and len(accuracy) == 6          # 15 languages + average
    assert all(row["en"]["mean"] >= 0.90 for row in accuracy.values()), {k: v["en"] for k, v in accuracy.items()}
    every = {lang: sum(row[lang]["mean"] for row in accuracy.values()) / len(accuracy)
             for lang in report["languages"] if lang not in ("en", "avg")}
    assert sum(every.values()) / len(every) >= chance + 0.10, every
    assert all(acc > chance for acc in every.values()), every
    assert report["constantPredictors"] == [], report["constantPredictors"]
    groups = [sum(every[lang] for lang in langs) / len(langs) for langs in SIMILARITY_GROUPS.values()]
    assert groups == sorted(groups, reverse=True), dict(zip(SIMILARITY_GROUPS, groups))
    alignment = report["alignment"]["dense"]
    assert alignment["mean"] > 0.05 and len(alignment["byLanguage"]) == 14  # chance is about 0.01


def assert_the_demo_ran_its_design(report: dict, manifest: dict) -> None:
    """The demo's spec.answer: looks after waves of seeds, an answer, and every run's seed within the
    seeds the looks released (a look never reruns or skips a seed)."""
    from stilts.answer import STOP_REASONS
    answer = report["answer"]
    design = answer["design"]
    looks = answer["looks"]
    assert looks and [look["look"] for look in looks] == list(range(1, len(looks) + 1)), looks
    assert [look["seeds"] for look in looks] == list(range(design["firstSeeds"], looks[-1]["seeds"] + 1)), looks
    assert answer["decision"] in STOP_REASONS, answer["decision"]
    assert all(look["decision"] == "continue" for look in looks[:-1]), looks
    seeds = {int(row["labels"]["seed"]) for row in manifest["jobs"] if row["phase"] != "pretrain"}
    assert seeds == set(range(1, looks[-1]["seeds"] + 1)), seeds
    assert set(answer["comparisons"]) == {"moe-vs-dense/anli", "moe-vs-dense/qqp"}, answer["comparisons"]
    # The demo answers its question before its budget runs out: every comparison decided or within the
    # target (the arms of a seed share its random numbers, so the interaction's seeds agree).
    assert answer["decision"] in ("decided", "precise enough"), answer
    for key, c in answer["comparisons"].items():
        assert c["decided"] or c["precise"], (key, c)
    assert answer["cost"]["unit"] and answer["cost"]["spent"] > 0, answer["cost"]
