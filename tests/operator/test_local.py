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
        (out / "COMPLETE").write_text(json.dumps({{"phase": job["phase"], "jobHash": job["jobHash"]}}))
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
    assert all(row["status"] == "Succeeded" for row in manifest["jobs"])


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
    targets = [ex.records[j.hash] for j in ex.jobs if j.phase == "target"]
    assert all(r["attempts"] == 3 for r in targets)

    (tmp_path / "b").mkdir()
    ex = executor(tmp_path / "b", 'if job["phase"] == "intermediate": sys.exit(2)')
    assert not ex.run(poll_seconds=0.01)
    states = {j.name: ex.records[j.hash] for j in ex.jobs}
    assert states["d-qqp-s1-intermediate"]["attempts"] == 1 and states["d-qqp-s1-intermediate"]["state"] == "Failed"
    assert states["d-qqp-s1-intermediate"]["reason"] == "BadInput"
    assert states["d-qqp-s1-target"]["state"] == "Blocked"
    assert states["d-none-s1-evaluate"]["state"] == "Succeeded", "the baseline run is not stopped"


def test_exit_0_without_a_valid_summary_is_a_failed_attempt(tmp_path):
    ex = executor(tmp_path, 'if job["phase"] == "evaluate":\n            (out / "COMPLETE").write_text("{}"); sys.exit(0)',
                  retries={"limit": 1, "backoffSeconds": 0})
    assert not ex.run(poll_seconds=0.01)
    evals = [ex.records[j.hash] for j in ex.jobs if j.phase == "evaluate"]
    assert all(r["state"] == "Failed" and r["reason"] == "InvalidSummary" and r["attempts"] == 2 for r in evals)


def test_a_job_that_keeps_failing_stops_after_the_retry_limit(tmp_path):
    ex = executor(tmp_path, 'if job["phase"] == "evaluate": sys.exit(1)')
    assert not ex.run(poll_seconds=0.01)
    evals = [ex.records[j.hash] for j in ex.jobs if j.phase == "evaluate"]
    assert all(r["state"] == "Failed" and r["attempts"] == 3 for r in evals)


def test_concurrency_bound(tmp_path):
    ex = executor(tmp_path, "import time; time.sleep(0.3)", maxConcurrentJobs=1)
    peak = 0
    original = ex.launch

    def launch(job, attempt, sharing):
        nonlocal peak
        original(job, attempt, sharing)
        peak = max(peak, sum(c.process.poll() is None for c in ex.children.values()))
    ex.launch = launch
    assert ex.run(poll_seconds=0.01)
    assert peak == 1


def test_each_job_runs_with_its_planned_world_size_or_a_valid_override(tmp_path):
    moe = {"name": "m", "model": "stilts/tiny-xlmr", "architecture": "moe", "workers": 2, "gpusPerWorker": 0,
           "moe": {"experts": 4, "expertParallelSize": 2}}
    ex = executor(tmp_path, backbones=[SPEC["spec"]["backbones"][0], moe])
    sizes = {j.name: ex.sizes[j.hash] for j in ex.jobs}
    assert sizes["m-qqp-s1-target"] == 2 and sizes["d-qqp-s1-target"] == 1
    assert executor(tmp_path, backbones=[moe]).__class__  # planned: fine
    import pytest
    from stilts.spec import SpecError
    doc = json.loads(json.dumps(SPEC))
    doc["spec"]["backbones"] = [moe]
    with pytest.raises(SpecError) as info:
        local.LocalExecutor(parse_experiment(doc), root=tmp_path / "runs", nproc=3, echo=False)
    assert "--nproc 3" in str(info.value) and "batchSize" in str(info.value) and "Leave --nproc out" in str(info.value)


def test_a_hung_up_terminal_does_not_stop_the_stopping(tmp_path, monkeypatch):
    """After a hangup, writes to the terminal fail (EIO; a dead pipe reader: EPIPE). The interrupt path prints
    before it stops the jobs, so a failing print must not skip stopping them."""
    import builtins
    import errno

    ex = executor(tmp_path)
    ex.echo = True

    def hung_up(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(builtins, "print", hung_up)
    ex.say("interrupted: running jobs finish their step")
    assert ex.echo is False, "later lines are not tried on a terminal that is gone"
