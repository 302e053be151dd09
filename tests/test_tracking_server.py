"""MLflow tracking against a real `mlflow server` (sqlite backend, started here on a free port): a local
grid's runs nested under one parent run, a killed and resumed job logging each step once, and a server
stopped mid-run costing training nothing and losing nothing. The server is full MLflow, in its own venv
(`make install` puts it in .venv/mlflow-server); without it these tests skip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from stilts_contract import tracking as contract
from tests.conftest import REPO, free_port, job_body, trainer_command

pytestmark = pytest.mark.slow


def mlflow_binary() -> Path | None:
    for candidate in (os.environ.get("STILTS_MLFLOW_SERVER"), Path(sys.executable).parents[1] / "mlflow-server" / "bin"
                      / "mlflow"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class Server:
    """`mlflow server` on 127.0.0.1, in its own process group (so SIGSTOP freezes all of it)."""

    def __init__(self, binary: Path, directory: Path):
        self.binary, self.dir, self.port = binary, directory, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> None:
        cmd = [str(self.binary), "server", "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
               "--artifacts-destination", str(self.dir / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        # No job runner: the tests need tracking only, and it would double the start-up time.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.dir / "server.log", "a") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, (self.dir / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server not healthy after {timeout} s: {(self.dir / 'server.log').read_text()[-2000:]}")

    def signal(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    binary = mlflow_binary()
    if binary is None:
        pytest.skip("no mlflow server here (`make install` puts one in .venv/mlflow-server)")
    s = Server(binary, tmp_path_factory.mktemp("mlflow"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    from mlflow.tracking import MlflowClient
    return MlflowClient(server.uri)


def runs(client, experiment: str, **tags) -> list:
    found = client.get_experiment_by_name(experiment)
    return list(client.search_runs([found.experiment_id], contract.filter_string(tags))) if found else []


def steps(client, run, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)]


# -- (1) a local grid ---------------------------------------------------------------------------------------------

GRID = {"apiVersion": "stilts.dev/v1alpha1", "kind": "TransferExperiment", "metadata": {"name": "tracked"},
        "spec": {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1],
                 "target": {"languages": ["en", "de", "sw"]},
                 "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                               {"name": "moe", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0, "architecture": "moe",
                                "moe": {"experts": 2, "topK": 2, "expertParallelSize": 1}}],
                 "training": {"pretrain": {"batchSize": 64, "microBatchSize": 64, "maxSteps": 30, "maxSeqLength": 48,
                                           "learningRate": 2e-3},
                              **{phase: {"batchSize": 32, "microBatchSize": 32, "maxSteps": 20, "maxSeqLength": 48,
                                         "evalEverySteps": 10, "evalExamples": 64, "learningRate": 5e-4}
                                 for phase in ("intermediate", "target")}},
                 "retries": {"limit": 1, "backoffSeconds": 0}}}


def test_a_local_grid_nests_one_run_per_job_under_the_experiments_parent(tmp_path, server, client):
    spec = tmp_path / "tracked.yaml"
    spec.write_text(yaml.safe_dump(GRID))
    cmd = [sys.executable, "-m", "stilts.cli", "run", str(spec), "--root", str(tmp_path / "runs"), "--mlflow",
           server.uri]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env={**trainer_env(), "PYTHONUNBUFFERED": "1"})
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    assert "MLflow: report logged to run" in first.stdout, first.stdout[-2000:]
    planned = json.loads((tmp_path / "runs" / "tracked" / "plan.json").read_text())["jobs"]

    (parent,) = runs(client, "stilts", **{contract.KIND: "experiment", contract.KEY: "local/tracked"})
    jobs = runs(client, "stilts", **{contract.KIND: "job", contract.KEY: "local/tracked"})
    assert sorted(r.data.tags["jobHash"] for r in jobs) == sorted(j["hash"] for j in planned)
    assert all(r.data.tags[contract.PARENT] == parent.info.run_id for r in jobs)
    assert all(r.info.status == "FINISHED" and r.data.tags["attempt"] == "1" for r in jobs)
    by = {(r.data.tags["backbone"], r.data.tags["intermediateTask"], r.data.tags["phase"]): r for r in jobs}

    target = by[("moe", "qqp", "target")]
    assert target.data.tags["seed"] == "1" and target.data.params["jobHash"] == target.data.tags["jobHash"]
    assert float(target.data.params["hyperparameters.learningRate"]) == 5e-4
    assert target.data.params["backbone.moe.experts"] == "2"
    for key in ("train/loss", "train/learning_rate", "train/tokens_per_second", "moe/aux_loss",
                "moe/dropped_token_share"):
        assert steps(client, target, key) == [1, 10, 20], key
    assert steps(client, target, "dev/score") == [10, 20]
    assert "moe/aux_loss" not in by[("dense", "qqp", "target")].data.metrics

    evaluate = by[("dense", "none", "evaluate")]
    assert {k for k in evaluate.data.metrics if k.startswith("xnli/test/")} == {
        "xnli/test/en", "xnli/test/de", "xnli/test/sw", "xnli/test/avg"}
    results = json.loads((tmp_path / "runs" / "tracked" / evaluate.data.tags["jobHash"] / "results.json").read_text())
    assert evaluate.data.metrics["xnli/test/de"] == pytest.approx(results["languages"]["de"]["test"])

    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["runs"] == 4
    assert parent.data.params["seeds"] == "1"
    assert {"report.json", "report.txt", "heatmap.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=trainer_env())
    assert again.returncode == 0 and f"{len(planned)} already complete" in again.stdout, again.stdout[-2000:]
    assert len(runs(client, "stilts", **{contract.KEY: "local/tracked"})) == len(planned) + 1, "nothing made twice"
    assert steps(client, client.get_run(parent.info.run_id), "runs") == [4]


# -- one tracked trainer process ----------------------------------------------------------------------------------

def start_job(tmp_path: Path, server: Server, job_hash: str, max_steps: int, attempt: int,
              checkpoint_every: int = 1000) -> subprocess.Popen:
    body = job_body("pretrain", tmp_path / "out", hyperparameters={
        "learningRate": 1e-3, "batchSize": 64, "microBatchSize": 64, "maxSteps": max_steps, "maxSeqLength": 48},
        checkpointEverySteps=checkpoint_every, jobHash=job_hash, experiment=job_hash, seed=0,
        labels={"backbone": "dense", "phase": "pretrain", "intermediateTask": "", "seed": ""},
        tracking={"uri": server.uri, "experimentName": "trainer", "parentKey": f"test/{job_hash}"})
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    log = open(tmp_path / f"attempt-{attempt}.log", "w")
    return subprocess.Popen(trainer_command(path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**trainer_env(), "OMP_NUM_THREADS": "1", "STILTS_ATTEMPT": str(attempt)})


def trainer_env() -> dict:
    """This process's environment less the MLflow settings its own client uses: the trainer's are its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def progress(tmp_path: Path) -> int:
    try:
        return json.loads((tmp_path / "out" / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def wait_for(condition, process: subprocess.Popen, timeout: float = 600, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the job ended before {what}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


def job_run(client, job_hash: str):
    (run,) = runs(client, "trainer", **{contract.KIND: "job", "jobHash": job_hash})
    return run


def logged_steps(client, job_hash: str) -> list[int]:
    found = runs(client, "trainer", **{contract.KIND: "job", "jobHash": job_hash})
    return steps(client, found[0], "train/loss") if found else []


EVERY_REPORT = [1] + list(range(10, 201, 10))  # the trainer reports at step 1, then every 10 steps


# -- (2) killed and resumed ---------------------------------------------------------------------------------------

def test_a_killed_job_resumed_continues_its_run_and_logs_each_step_once(tmp_path, server, client):
    first = start_job(tmp_path, server, "resumed", max_steps=200, attempt=1, checkpoint_every=40)
    # Killed (a lost node: no checkpoint on the way out) once steps after its checkpoint at 40 are logged.
    wait_for(lambda: max(logged_steps(client, "resumed"), default=0) >= 60, first, what="step 60 in MLflow")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    before = logged_steps(client, "resumed")
    assert (tmp_path / "out" / "checkpoints").is_dir() and max(before) >= 60

    second = start_job(tmp_path, server, "resumed", max_steps=200, attempt=2, checkpoint_every=40)
    assert second.wait(600) == 0, (tmp_path / "attempt-2.log").read_text()[-3000:]
    assert "resumed at step" in (tmp_path / "attempt-2.log").read_text()
    run = client.get_run(job_run(client, "resumed").info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["attempt"] == "2"
    assert steps(client, run, "train/loss") == EVERY_REPORT, "each step once, in order"
    assert len(runs(client, "trainer", **{contract.KEY: "test/resumed"})) == 2  # the parent and the job's run


# -- (3) the server stopped mid-run -------------------------------------------------------------------------------

def test_a_server_stopped_mid_run_costs_training_no_time_and_loses_nothing(tmp_path, server, client):
    job = start_job(tmp_path, server, "outage", max_steps=200, attempt=1)
    wait_for(lambda: max(logged_steps(client, "outage"), default=0) >= 20, job, what="step 20 in MLflow")
    stopped_at, paused = progress(tmp_path), time.time()
    server.signal(signal.SIGSTOP)  # a hung server: requests wait for their timeout, the worst case
    try:
        # Long enough for a request to time out (10 s), while training goes on.
        wait_for(lambda: time.time() - paused > 15 and progress(tmp_path) >= stopped_at + 30, job, timeout=300,
                 what="training past the outage")
        trained = progress(tmp_path) - stopped_at
    finally:
        server.signal(signal.SIGCONT)
    outage = time.time() - paused
    assert job.wait(600) == 0, (tmp_path / "attempt-1.log").read_text()[-3000:]
    log = (tmp_path / "attempt-1.log").read_text()
    assert "unreachable" in log, log[-3000:]
    waited = float(log.split("training waited ")[1].split(" s")[0])
    print(f"server stopped {outage:.0f} s while training ran {trained} steps; training waited {waited:.2f} s")
    assert waited <= 6.0, "only the phase's bounded flush may wait"
    run = job_run(client, "outage")
    assert steps(client, run, "train/loss") == EVERY_REPORT, "nothing lost, nothing twice"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_cluster_report_goes_to_the_parent_run_its_jobs_made(tmp_path, server, client, monkeypatch, capsys):
    """`stilts report tx/NAME` of a tracked experiment logs the report to the parent run its trainers made
    (found by the experiment's namespace/name/uid), and ends it with the experiment."""
    from types import SimpleNamespace

    from stilts import cli
    from stilts.plan import plan
    from stilts.spec import parse_spec

    spec = {"dataSource": "synthetic", "seeds": [1, 2], "intermediateTasks": ["qqp"],
            "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                          {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe", "gpusPerWorker": 0,
                           "moe": {"experts": 4, "expertParallelSize": 1}}],
            "tracking": {"mlflow": {"uri": server.uri, "experimentName": "cluster-reports"}}}
    experiment = {"metadata": {"namespace": "team", "name": "exp", "uid": "u-123"}, "spec": spec,
                  "status": {"phase": "Succeeded"}}
    key = "team/exp/u-123"
    experiment_id = contract.ensure_experiment(client, "cluster-reports")
    parent = contract.ensure_parent(client, experiment_id, key, "exp")  # as the first trainer makes it
    jobs = plan(parse_spec(spec))
    results = {j.hash: {"test": {"en": 0.8 + 0.01 * (j.backbone == "moe"), "de": 0.6 + 0.01 * j.seed},
                        "testItems": 1000} for j in jobs if j.phase == "evaluate"}
    seen = SimpleNamespace(name="exp", jobs=jobs, results=results, experiment=experiment)
    monkeypatch.setattr(cli, "_cluster", lambda args: (SimpleNamespace(load=lambda *a: seen), None, "team"))
    assert cli.main(["report", "tx/exp", "--out", str(tmp_path / "report")]) == 0
    assert f"MLflow: report logged to run {parent}" in capsys.readouterr().out
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["runs"] == len(results)
    assert {"report.json", "report.txt", "heatmap.png", "answer.png"} <= {a.path for a in client.list_artifacts(parent)}
