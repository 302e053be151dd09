"""The local executor with its real plan and a stand-in trainer command (the real one is in test_demo)."""

import json
import sys
import textwrap

from stilts import local
from stilts.spec import parse_experiment

SPEC = {"apiVersion": "stilts.dev/v1alpha1", "kind": "TransferExperiment", "metadata": {"name": "t"},
        "spec": {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1],
                 "backbones": [{"name": "d", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}],
                 "retries": {"limit": 2, "backoffSeconds": 0}, "maxConcurrentJobs": 2}}


def fake_trainer(tmp_path, behaviour: str):
    """A script standing in for `python -m stilts_trainer`: honours the job.json contract (writes COMPLETE)."""
    script = tmp_path / "fake_trainer.py"
    script.write_text(textwrap.dedent(f"""
        import json, pathlib, sys
        job = json.loads(pathlib.Path(sys.argv[sys.argv.index("--job") + 1]).read_text())
        out = pathlib.Path(job["output"])
        attempts = out / "attempts"
        n = int(attempts.read_text()) + 1 if attempts.exists() else 1
        attempts.write_text(str(n))
        log = pathlib.Path({str(tmp_path / "order.log")!r})
        log.open("a").write(job["labels"]["phase"] + " " + job["jobHash"] + " " + str(job["parent"]) + "\\n")
        {behaviour}
        if job["phase"] == "evaluate":
            (out / "results.json").write_text(json.dumps({{"languages": {{"en": {{"dev": 0.5, "test": 0.5}}}}}}))
        (out / "COMPLETE").write_text("{{}}")
    """))
    return [sys.executable, str(script)]


def executor(tmp_path, behaviour="", **spec_changes):
    doc = json.loads(json.dumps(SPEC))
    doc["spec"].update(spec_changes)
    ex = local.LocalExecutor(parse_experiment(doc), root=tmp_path / "runs", echo=False)
    ex.trainer = fake_trainer(tmp_path, behaviour)
    return ex


def test_runs_parents_first_and_skips_finished_jobs_on_rerun(tmp_path):
    ex = executor(tmp_path)
    assert ex.run(poll_seconds=0.01)
    order = (tmp_path / "order.log").read_text().splitlines()
    assert len(order) == len(ex.jobs) == 6
    done = set()
    for line in order:
        phase, h, parent = line.split()
        assert parent == "None" or parent.endswith(tuple(done)), line
        done.add(h)
    again = executor(tmp_path)
    assert again.run(poll_seconds=0.01)
    assert len((tmp_path / "order.log").read_text().splitlines()) == 6, "nothing ran twice"
    manifest = json.loads((tmp_path / "runs" / "t" / "plan.json").read_text())
    assert all(row["status"] == "succeeded" for row in manifest["jobs"])


def test_finished_jobs_of_another_experiment_are_reused(tmp_path):
    assert executor(tmp_path).run(poll_seconds=0.01)
    other = json.loads(json.dumps(SPEC))
    other["metadata"]["name"] = "other"
    other["spec"]["seeds"] = [1, 2]
    ex = local.LocalExecutor(parse_experiment(other), root=tmp_path / "runs", echo=False)
    ex.trainer = fake_trainer(tmp_path, "")
    assert ex.run(poll_seconds=0.01)
    assert len((tmp_path / "order.log").read_text().splitlines()) == 6 + 5, "only seed 2's jobs ran"


def test_transient_failures_are_retried_and_permanent_ones_are_not(tmp_path):
    ex = executor(tmp_path, 'if job["phase"] == "target" and n < 3: sys.exit(1)')
    assert ex.run(poll_seconds=0.01)
    targets = [s for s in ex.states.values() if s.job.phase == "target"]
    assert all(s.attempts == 3 for s in targets)

    (tmp_path / "b").mkdir()
    ex = executor(tmp_path / "b", 'if job["phase"] == "intermediate": sys.exit(2)')
    assert not ex.run(poll_seconds=0.01)
    states = {s.job.name: s for s in ex.states.values()}
    assert states["d-qqp-s1-intermediate"].attempts == 1 and states["d-qqp-s1-intermediate"].status == "failed"
    assert states["d-qqp-s1-target"].status == "blocked"
    assert states["d-none-s1-evaluate"].status == "succeeded", "the baseline run is not stopped"


def test_a_job_that_keeps_failing_stops_after_the_retry_limit(tmp_path):
    ex = executor(tmp_path, 'if job["phase"] == "evaluate": sys.exit(1)')
    assert not ex.run(poll_seconds=0.01)
    evals = [s for s in ex.states.values() if s.job.phase == "evaluate"]
    assert all(s.status == "failed" and s.attempts == 3 for s in evals)


def test_concurrency_bound(tmp_path):
    ex = executor(tmp_path, "import time; time.sleep(0.3)", maxConcurrentJobs=1)
    ex.parallel = 1
    peak = 0
    original = ex.launch

    def launch(s, sharing=1):
        nonlocal peak
        original(s, sharing)
        peak = max(peak, sum(x.status == "running" for x in ex.states.values()))
    ex.launch = launch
    assert ex.run(poll_seconds=0.01)
    assert peak == 1
