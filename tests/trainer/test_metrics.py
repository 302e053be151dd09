import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from stilts_trainer.metrics import EVENTS_DIR, TrainerMetrics
from tests.conftest import free_port, job_body, run_trainer


def test_rank0_serves_prometheus_metrics_on_the_jobs_port():
    port = free_port()
    m = TrainerMetrics({"experiment": "e", "job_hash": "h", "phase": "target", "backbone": "dense", "task": "mnli"},
                       port)
    try:
        m.step(7, 0.5, 1e-5, 1234.0)
        m.dev_score(0.8)
        m.head("squad", 1.25)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        m.close()
    labels = 'backbone="dense",experiment="e",job_hash="h",phase="target",task="mnli"'
    for line in (f"stilts_trainer_step{{{labels}}} 7.0", f"stilts_trainer_loss{{{labels}}} 0.5",
                 f"stilts_trainer_tokens_per_second{{{labels}}} 1234.0", f"stilts_trainer_dev_score{{{labels}}} 0.8"):
        assert line in text, text
    head = [line for line in text.splitlines() if line.startswith("stilts_trainer_head_loss{")]
    assert len(head) == 1 and 'head="squad"' in head[0] and head[0].endswith(" 1.25"), head


def test_no_port_no_server():
    assert TrainerMetrics({k: "" for k in ("experiment", "job_hash", "phase", "backbone", "task")}, 0).server is None


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard itself reads from the event files (its own reader, size guidance off)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_resumed_attempt_replaces_the_curve_past_its_checkpoint(tmp_path):
    labels = {k: "x" for k in ("experiment", "job_hash", "phase", "backbone", "task")}
    first = TrainerMetrics(labels, events=tmp_path)
    first.start(0)
    for step in (10, 20, 30, 40, 50):  # preempted after 50; its last checkpoint was step 30
        first.step(step, 1.0, 1e-5, 100.0)
    first.close()
    second = TrainerMetrics(labels, events=tmp_path)
    second.start(30)
    for step in (40, 50, 60):
        second.step(step, 0.5, 1e-5, 100.0)
    second.close()
    loss = _scalars(tmp_path)["train/loss"]
    assert loss == [(10, 1.0), (20, 1.0), (30, 1.0), (40, 0.5), (50, 0.5), (60, 0.5)]


@pytest.mark.slow
def test_a_moe_training_job_writes_tensorboard_curves_that_tensorboard_reads(tmp_path, pretrained):
    out = tmp_path / "target"
    body = job_body("target", out, pretrained, task="mnli", seed=1,
                    backbone={"name": "m", "model": "stilts/tiny-xlmr", "architecture": "moe",
                              "moe": {"experts": 4, "topK": 2, "everyNLayers": 2, "expertParallelSize": 1}},
                    hyperparameters={"maxSteps": 30, "evalEverySteps": 10, "evalExamples": 64,
                                     "maxTrainExamples": 1000, "warmupRatio": 0.3})
    r = run_trainer(body, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    curves = _scalars(out / EVENTS_DIR)
    steps = lambda tag: [s for s, _ in curves[tag]]  # noqa: E731
    assert steps("train/loss") == [1, 10, 20, 30] == steps("loss/mnli") == steps("train/tokens_per_second")
    lr = [v for _, v in curves["train/learning_rate"]]
    assert lr[0] < lr[1] and lr[1] > lr[3], "warmup, then decay"
    assert all(v > 0 for _, v in curves["train/tokens_per_second"])
    assert steps("dev/score") == [10, 20, 30] and len(curves["dev/selected_model_full"]) == 1
    assert all(0 <= v <= 1 for _, v in curves["dev/score"])
    assert steps("moe/aux_loss") == [1, 10, 20, 30]
    shares = [curves[f"moe/expert_token_share/{e}"] for e in range(4)]
    for at in range(4):
        assert abs(sum(s[at][1] for s in shares) - 1) < 1e-4, "expert load: shares of one step sum to 1"
    # `stilts tensorboard` serves them, one run per job named as `stilts status` names it.
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    (run_dir / "plan.json").write_text(json.dumps({"experiment": "x", "jobs": [
        {"name": "m-mnli-s1-target", "phase": "target", "directory": str(out)},
        {"name": "m-mnli-s1-evaluate", "phase": "evaluate", "directory": str(tmp_path / "eval")}]}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "stilts.cli", "tensorboard", str(run_dir), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, tags = time.time() + 120, None
        while tags is None:
            assert server.poll() is None and time.time() < deadline, server.stdout.read()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    (run,) = tags  # TensorBoard shows it as "m-mnli-s1-target/." (the events sit at the named path's top)
    assert run.split("/")[0] == "m-mnli-s1-target", tags
    assert {"train/loss", "dev/score", "moe/aux_loss"} <= set(tags[run])
