"""Real trainer processes: the chain across 2 torchrun processes, the encoder hand-off, preemption."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from stilts_contract.names import Exit
from stilts_trainer.synthetic import XNLI_LANGUAGES
from tests.conftest import job_body, kill_naming, run_trainer, trainer_command

pytestmark = pytest.mark.slow


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def test_chain_on_two_processes_writes_results_for_fifteen_languages(tmp_path, pretrained):
    inter, target, evaluate = tmp_path / "inter", tmp_path / "target", tmp_path / "eval"
    r = run_trainer(job_body("intermediate", inter, pretrained, task="qqp",
                             hyperparameters={"maxTrainExamples": 2000}), tmp_path, nproc=2, name="i.json")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_trainer(job_body("target", target, inter, task="mnli"), tmp_path, nproc=2, name="t.json")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["devScore"] > 0.6, metrics  # chance is 0.33
    termination = tmp_path / "termination-log"
    termination.touch()
    r = run_trainer(job_body("evaluate", evaluate, target, task="xnli"), tmp_path, nproc=2, name="e.json",
                    env={"STILTS_TERMINATION_LOG": str(termination)})
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((evaluate / "results.json").read_text())
    assert sorted(results["languages"]) == sorted(XNLI_LANGUAGES)
    assert all(set(v) == {"dev", "test"} for v in results["languages"].values())
    assert results["languages"]["en"]["test"] > 0.6
    summary = json.loads(termination.read_text())
    assert summary["phase"] == "evaluate" and summary["test"]["en"] == results["languages"]["en"]["test"]
    assert len(termination.read_text()) < 4096
    for out in (inter, target, evaluate):
        assert json.loads((out / "COMPLETE").read_text())["worldSize"] == 2
        assert not (out / "checkpoints").exists()


def test_next_phase_starts_from_the_previous_encoder_and_drops_its_head(tmp_path, pretrained):
    out = tmp_path / "target"
    job = job_body("target", out, pretrained, task="mnli",
                   hyperparameters={"learningRate": 1e-12, "maxSteps": 3, "evalEverySteps": 1000})
    r = run_trainer(job, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    before, after = weights(pretrained / "model"), weights(out / "model")
    assert not any(k.startswith("lm_head") for k in after), "the masked-LM head is not inherited"
    compared = 0
    for key, value in after.items():
        source = before.get(key) if key in before else before.get("roberta." + key)
        assert source is not None, key
        assert torch.allclose(source, value, atol=1e-6), key
        compared += 1
    assert compared > 20
    heads = json.loads((out / "model" / "heads.json").read_text())
    assert heads == [{"task": "mnli", "format": "classification", "labels": ["entailment", "neutral", "contradiction"]}]
    assert (out / "model" / "heads.pt").exists()


def assert_same_run(reference, out):
    """Bit-equal weights, and the same dev scores and selected step, as the uninterrupted reference."""
    a, b = weights(reference / "model"), weights(out / "model")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    got_metrics = json.loads((out / "metrics.json").read_text())
    assert (got_metrics["dev"], got_metrics["bestStep"]) == (ref_metrics["dev"], ref_metrics["bestStep"])


def _run_until_checkpoint_then_kill(path, marker, timeout=300, nproc=1):
    """Start the job, SIGKILL it (the whole process group) once `marker` exists."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(trainer_command(path, nproc), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + timeout
    while not marker.exists():
        assert process.poll() is None, "the job ended before the checkpoint appeared"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    kill_naming(path)
    process.wait()
    return env


@pytest.mark.parametrize("tear_newest", [False, True], ids=["killed", "killed-and-newest-shard-torn"])
def test_killed_job_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path, pretrained, tear_newest):
    hp = {"maxTrainExamples": 1600, "evalEverySteps": 10, "evalExamples": 100, "earlyStoppingPatience": 100}
    reference = tmp_path / "reference"
    r = run_trainer(job_body("target", reference, pretrained, task="mnli", hyperparameters=hp,
                             checkpointEverySteps=10), tmp_path, name="ref.json")
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "preempted"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job_body("target", out, pretrained, task="mnli", hyperparameters=hp,
                                        checkpointEverySteps=10)))
    env = _run_until_checkpoint_then_kill(path, out / "checkpoints" / "step-30" / "COMMITTED")
    assert not (out / "COMPLETE").exists()
    if tear_newest:
        newest = max((out / "checkpoints").glob("step-*/COMMITTED"), key=lambda p: int(p.parent.name[5:])).parent
        shard = next(newest.glob("*model_states.pt"))
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    r = subprocess.run(trainer_command(path), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at step" in r.stderr
    if tear_newest:
        assert "unreadable" in r.stderr
    assert_same_run(reference, out)


def test_sigterm_commits_a_checkpoint_on_every_rank_and_the_next_attempt_ends_where_an_uninterrupted_run_ends(
        tmp_path, pretrained):
    """Preemption as a pod sees it: SIGTERM to the launcher only (the container's first process), which
    forwards it to both workers; they finish the step, commit a checkpoint together and exit 3."""
    hp = {"maxTrainExamples": 1600, "evalEverySteps": 10, "evalExamples": 100, "earlyStoppingPatience": 100}
    body = lambda out: job_body("target", out, pretrained, task="mnli", hyperparameters=hp,  # noqa: E731
                                checkpointEverySteps=1000)  # no step checkpoint: only SIGTERM's
    reference = tmp_path / "reference"
    r = run_trainer(body(reference), tmp_path, nproc=2, name="ref.json")
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "preempted"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(trainer_command(path, nproc=2), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    progress = out / "progress.json"
    deadline = time.time() + 300
    while not (progress.exists() and json.loads(progress.read_text())["step"] >= 10):
        assert launcher.poll() is None, launcher.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    log = launcher.communicate(timeout=120)[0]
    assert launcher.returncode == Exit.PREEMPTED, log[-3000:]
    (committed,) = [p.parent for p in (out / "checkpoints").glob("step-*/COMMITTED")]
    step = int(committed.name.removeprefix("step-"))
    total = json.loads(progress.read_text())["total"]
    assert 10 <= step < total, (step, total)
    assert sorted(p.name for p in committed.glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]
    assert log.count(f"preempted: checkpoint of step {step} committed") >= 1
    assert not (out / "COMPLETE").exists()

    r = subprocess.run(trainer_command(path, nproc=2), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed at step {step} of {total}" in r.stderr
    assert_same_run(reference, out)


def test_the_launcher_keeps_a_bad_input_exit_code_that_torchrun_would_turn_into_1(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job_body("target", tmp_path / "out", tmp_path / "missing", task="nope")))
    r = subprocess.run(trainer_command(path, nproc=2), capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == Exit.BAD_INPUT, r.stderr[-3000:]
    assert "task" in r.stderr


def test_a_resume_that_finds_only_unreadable_checkpoints_refuses_to_start_over(tmp_path, pretrained):
    out = tmp_path / "out"
    job = job_body("target", out, pretrained, task="mnli", checkpointEverySteps=10,
                   hyperparameters={"maxTrainExamples": 800, "maxSteps": 20})
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = _run_until_checkpoint_then_kill(path, out / "checkpoints" / "step-10" / "COMMITTED")
    for shard in (out / "checkpoints").glob("step-*/*model_states.pt"):
        shard.write_bytes(b"")
    r = subprocess.run(trainer_command(path), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "refusing to restart from step 0" in r.stderr
    assert not (out / "COMPLETE").exists()


def test_a_finished_job_is_not_run_again(tmp_path, pretrained):
    r = run_trainer(job_body("evaluate", tmp_path / "e", pretrained, task="xnli", languages=["en"]), tmp_path)
    # pretrained has no classification head: evaluating it fails, so success below proves no rerun
    assert r.returncode != 0
    (tmp_path / "e").mkdir(exist_ok=True)
    (tmp_path / "e" / "COMPLETE").write_text(json.dumps({"phase": "evaluate"}))
    r = run_trainer(job_body("evaluate", tmp_path / "e", pretrained, task="xnli", languages=["en"]), tmp_path)
    assert r.returncode == 0 and "already complete" in r.stderr


def test_the_mlm_ablation_mixes_masked_lm_batches_into_intermediate_training(tmp_path, pretrained):
    """The paper's ablation: an intermediate job with mlmMix trains its task head and the inherited
    masked-LM head on batches drawn from both; the output is the task's model, as for plain STILTs."""
    out = tmp_path / "inter-mlm"
    job = job_body("intermediate", out, pretrained, task="qqp",
                   hyperparameters={"maxTrainExamples": 640, "evalEverySteps": 10},
                   mlmMix={"weight": 0.5, "languages": ["en", "de", "sw"], "examplesPerLanguage": 300})
    r = run_trainer(job, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["lossCurve"]) == {"qqp", "mlm"}, metrics["lossCurve"].keys()
    assert all(0 < v < 20 for v in metrics["lossCurve"]["mlm"])
    # An epoch is still one pass over the task's 640 examples; the masked-LM batches come on top.
    assert metrics["steps"] == 40, metrics["steps"]  # 640 / (1 - 0.5) / batch 32
    heads = json.loads((out / "model" / "heads.json").read_text())
    assert [h["task"] for h in heads] == ["qqp"]
    assert not any(k.startswith("lm_head") for k in weights(out / "model"))


def test_a_job_on_cached_features_trains_exactly_as_one_that_encodes_its_own(tmp_path, pretrained):
    """Two processes: rank 0 encodes and writes the training set, both ranks map it; a second job maps the
    entry without encoding; both train exactly as a job with the cache off."""
    hp = {"maxTrainExamples": 1600, "maxSteps": 20, "evalEverySteps": 10, "evalExamples": 100}
    cache = tmp_path / "cache"
    curves = []
    for name, env in (("off", {"STILTS_FEATURE_CACHE": "off"}), ("cold", {}), ("warm", {})):
        out = tmp_path / name
        r = run_trainer(job_body("target", out, pretrained, task="mnli", hyperparameters=hp, cacheDir=str(cache)),
                        tmp_path, nproc=2, name=f"{name}.json", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        curves.append((metrics["lossCurve"], metrics["history"], metrics["devScore"]))
        entries = list((cache / "stilts-features").glob("*/meta.json")) if (cache / "stilts-features").exists() else []
        assert len(entries) == (0 if name == "off" else 1), name
    assert curves[0] == curves[1] == curves[2]


def test_length_grouping_cuts_the_padding_a_job_trains_on(tmp_path, pretrained):
    """groupByLength (opt-in) against uniformly random batches (the default): the same steps over the
    same examples, far fewer padded positions."""
    share = {}
    for grouped in (True, False):
        out = tmp_path / f"grouped-{grouped}"
        hp = {"maxTrainExamples": 1600, "epochs": 1, "evalEverySteps": 1000, "evalExamples": 100,
              "groupByLength": grouped}
        r = run_trainer(job_body("target", out, pretrained, task="mnli", hyperparameters=hp), tmp_path,
                        name=f"{grouped}.json")
        assert r.returncode == 0, r.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["steps"] == 1600 // 32
        share[grouped] = metrics["paddingShare"]
    assert 0 <= share[True] < share[False] / 2, share
