"""MLflow tracking without a server: the spec block, the hash it leaves alone, what pods get, and the
trainer's tracker against a stand-in client (down, slow, full, resumed). tests/test_tracking_server.py
runs the same against a real `mlflow server`."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from types import SimpleNamespace

import pytest

from stilts import manifests, plan as P
from stilts.spec import SpecError, parse_experiment, parse_spec
from stilts_contract import tracking as contract
from stilts_trainer.tracking import Tracker

SPEC = {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1],
        "backbones": [{"name": "d", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                      {"name": "m", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0, "architecture": "moe",
                       "moe": {"experts": 2, "expertParallelSize": 1}}]}
TRACKING = {"mlflow": {"uri": "https://mlflow.example:5000", "experimentName": "xnli",
                       "credentialsSecret": "mlflow-credentials"}}


def experiment(spec: dict) -> dict:
    return {"apiVersion": "stilts.dev/v1alpha1", "kind": "TransferExperiment",
            "metadata": {"name": "t", "namespace": "lab", "uid": "u-1"}, "spec": spec}


# -- the spec and the plan ----------------------------------------------------------------------------------------

def test_turning_tracking_on_changes_no_job_hash():
    """Finished jobs are found again by hash: tracking on must not rerun them."""
    off = [j.hash for j in P.plan(parse_spec(SPEC))]
    on = [j.hash for j in P.plan(parse_spec({**SPEC, "tracking": TRACKING}))]
    assert on == off


@pytest.mark.parametrize("mlflow,field,fix", [
    ({"uri": "sqlite:///runs/mlflow.db"}, "spec.tracking.mlflow.uri", "http:// or https://"),
    ({"uri": "mlflow:5000"}, "spec.tracking.mlflow.uri", "stilts run --mlflow"),
    ({"uri": "http://m:5000", "credentialsSecret": "My_Secret"}, "spec.tracking.mlflow.credentialsSecret",
     "name of a Secret"),
    ({"uri": "http://m:5000", "experimentName": ""}, "spec.tracking.mlflow.experimentName", ""),
    ({"uri": "http://m:5000", "password": "x"}, "spec.tracking.mlflow.password", "unknown field"),
])
def test_a_bad_tracking_block_is_refused_naming_the_field_and_the_fix(mlflow, field, fix):
    with pytest.raises(SpecError) as err:
        parse_spec({**SPEC, "tracking": {"mlflow": mlflow}})
    assert field + ":" in str(err.value) and fix in str(err.value), str(err.value)


def test_the_crd_carries_the_tracking_block_with_its_uri_pattern():
    from stilts.crd import spec_schema
    block = spec_schema()["properties"]["tracking"]["properties"]["mlflow"]
    assert block["required"] == ["uri"] and block["properties"]["uri"]["pattern"].startswith("^(https?://")
    assert block["properties"]["experimentName"]["default"] == "stilts"


# -- what the operator writes -------------------------------------------------------------------------------------

def test_pods_get_credentials_from_the_secret_and_job_json_gets_none():
    exp = parse_experiment(experiment({**SPEC, "tracking": TRACKING}))
    doc = experiment({**SPEC, "tracking": TRACKING})
    job = next(j for j in P.plan(exp.spec) if j.phase == "target")
    config = manifests.config_map(doc, job, 2, "child")
    body = json.loads(config["data"]["job.json"])
    assert body["tracking"] == {"uri": "https://mlflow.example:5000", "experimentName": "xnli",
                                "parentKey": "lab/t/u-1", "parentRunId": ""}
    assert "mlflow-credentials" not in config["data"]["job.json"]
    assert not any(v in config["data"]["job.json"] for v in contract.CREDENTIAL_VARIABLES)
    env = manifests.pod_template(doc, exp.spec, job, 2, "child", "pytorch", "img")["spec"]["containers"][0]["env"]
    secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if e["name"].startswith("MLFLOW_")}
    assert set(secret) == set(contract.CREDENTIAL_VARIABLES)
    assert all(ref == {"name": "mlflow-credentials", "key": name, "optional": True} for name, ref in secret.items())
    assert {"name": "STILTS_ATTEMPT", "value": "2"} in env


def test_the_admins_policy_limits_the_credentials_secret():
    from stilts.policy import AdmissionPolicy, violations
    policy = AdmissionPolicy.from_json(json.dumps({"allowedMlflowCredentialsSecrets": ["mlflow-team"]}))
    refused = violations(parse_spec({**SPEC, "tracking": TRACKING}), policy, "img")
    assert refused == ["spec.tracking.mlflow.credentialsSecret: 'mlflow-credentials' is not allowed (mlflow-team); "
                       "the cluster admin sets this in the operator's policy"]
    assert violations(parse_spec(SPEC), policy, "img") == []


def test_without_tracking_nothing_changes_for_pods():
    doc = experiment(SPEC)
    exp = parse_experiment(doc)
    job = P.plan(exp.spec)[0]
    assert json.loads(manifests.config_map(doc, job, 1, "c")["data"]["job.json"])["tracking"] is None
    env = manifests.pod_template(doc, exp.spec, job, 1, "c", "pytorch", "img")["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"].startswith("MLFLOW_")]


def test_local_settings_flag_spec_and_off(tmp_path):
    from stilts.tracking import local_settings
    spec, tracked = parse_spec(SPEC), parse_spec({**SPEC, "tracking": TRACKING})
    assert local_settings(spec, None, tmp_path, "t") is None
    assert local_settings(spec, "", tmp_path, "t")["uri"] == f"sqlite:///{tmp_path}/mlflow.db"
    assert local_settings(tracked, None, tmp_path, "t")["uri"] == "https://mlflow.example:5000"
    assert local_settings(tracked, "http://localhost:5000", tmp_path, "t") == {
        "uri": "http://localhost:5000", "experimentName": "xnli", "parentKey": "local/t"}


# -- the contract's pure parts ------------------------------------------------------------------------------------

def test_filter_strings_quote_values():
    assert contract.filter_string({"b": "it's", "a": "x"}) == "tags.`a` = 'x' and tags.`b` = 'it\\'s'"


def test_fresh_keeps_only_steps_past_what_the_run_has():
    points = [("loss", 1.0, 30), ("loss", 0.9, 40), ("lr", 0.1, 30), ("dev", 0.5, 0)]
    assert contract.fresh(points, {"loss": 30, "dev": 0}) == [("loss", 0.9, 40), ("lr", 0.1, 30)]


def test_job_params_and_tags_come_from_the_body():
    job = next(j for j in P.plan(parse_spec(SPEC)) if j.phase == "intermediate" and j.backbone == "m")
    body = P.job_json(job, "/out", "/parent", experiment="t", tracking={"uri": "http://x", "experimentName": "e",
                                                                        "parentKey": "k"})
    params = contract.job_params(body)
    assert params["phase"] == "intermediate" and params["task"] == "qqp" and params["jobHash"] == job.hash
    assert params["hyperparameters.learningRate"] == str(body["hyperparameters"]["learningRate"])
    assert params["backbone.moe.experts"] == "2"
    assert not any(k.startswith(("output", "parent", "tracking", "cacheDir")) for k in params)
    tags = contract.job_tags(body, "k", "p1", "3")
    assert {k: tags[k] for k in contract.JOB_TAGS} == {"backbone": "m", "intermediateTask": "qqp", "seed": "1",
                                                       "phase": "intermediate", "jobHash": job.hash, "attempt": "3"}
    assert tags[contract.PARENT] == "p1" and tags[contract.RUN_NAME] == "m-qqp-s1-intermediate"


def test_report_metrics_carry_each_comparison_and_the_answer():
    report = {"runs": 8, "interaction": {"m-vs-d/qqp": {"languages": {"avg": {"paired": {
        "mean": 0.012, "low": -0.003, "high": 0.027, "claimed": False}}}}},
        "answer": {"seeds": 4, "look": 2, "comparisons": {"m-vs-d/qqp": {"mean": 0.012, "low": 0.001, "high": 0.02,
                                                                          "halfWidth": 0.01, "decided": True}},
                   "cost": {"unit": "CPU", "spent": 1.5, "shared": 0.5, "perSeed": 0.25, "seeds": 4}}}
    figures = contract.report_metrics(report)
    assert figures["interaction/m-vs-d/qqp/mean"] == 0.012 and figures["interaction/m-vs-d/qqp/decided"] == 0
    assert figures["answer/m-vs-d/qqp/decided"] == 1 and figures["answer/m-vs-d/qqp/low"] == 0.001
    assert figures["answer/seeds"] == 4 and figures["answer/cost/spent"] == 1.5 and figures["runs"] == 8
    assert all(isinstance(v, float) for v in figures.values())


# -- a stand-in MLflow client -------------------------------------------------------------------------------------

class FakeClient:
    """Enough of MlflowClient for the look-ups and the tracker; `down` makes every call fail, `slow`
    makes each wait that long first (a server that hangs)."""

    def __init__(self):
        self.experiments, self.runs, self.metrics, self.params = {}, {}, {}, {}
        self.down, self.slow, self.calls, self.clock = False, 0.0, 0, 0

    def _call(self):
        self.calls += 1
        if self.slow:
            time.sleep(self.slow)
        if self.down:
            raise ConnectionError("Connection refused")

    def get_experiment_by_name(self, name):
        self._call()
        return SimpleNamespace(experiment_id=self.experiments[name]) if name in self.experiments else None

    def create_experiment(self, name, artifact_location=None):
        self._call()
        self.experiments[name] = str(len(self.experiments))
        return self.experiments[name]

    def search_runs(self, experiment_ids, filter_string, max_results=50):
        self._call()
        wanted = dict(re.findall(r"tags\.`([^`]+)` = '([^']*)'", filter_string))
        return [r for r in self.runs.values() if all(r.data.tags.get(k) == v for k, v in wanted.items())]

    def create_run(self, experiment_id, tags=None, run_name=None):
        self._call()
        self.clock += 1
        run_id = f"r{len(self.runs)}"
        self.runs[run_id] = SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=self.clock, status="RUNNING"),
                                            data=SimpleNamespace(tags=dict(tags or {})))
        return self.runs[run_id]

    def delete_run(self, run_id):
        self._call()
        del self.runs[run_id]

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._call()
        for m in metrics:
            self.metrics.setdefault(run_id, []).append((m.key, m.step, m.value))
        self.params.setdefault(run_id, {}).update({p.key: p.value for p in params})

    def get_metric_history(self, run_id, key):
        self._call()
        return [SimpleNamespace(step=s) for k, s, _ in self.metrics.get(run_id, []) if k == key]

    def set_tag(self, run_id, key, value):
        self._call()
        self.runs[run_id].data.tags[key] = value

    def update_run(self, run_id, status=None):
        self._call()
        self.runs[run_id].info.status = status

    def set_terminated(self, run_id, status="FINISHED"):
        self._call()
        self.runs[run_id].info.status = status

    def steps(self, key: str) -> list[int]:
        (job,) = [r for r in self.runs.values() if r.data.tags.get(contract.KIND) == "job"]
        return [s for k, s, _ in self.metrics.get(job.info.run_id, []) if k == key]


BODY = {"phase": "target", "task": "mnli", "seed": 1, "jobHash": "h1", "experiment": "t",
        "backbone": {"name": "d", "model": "stilts/tiny-xlmr", "architecture": "dense"},
        "labels": {"backbone": "d", "intermediateTask": "none", "seed": "1"},
        "tracking": {"uri": "fake://", "experimentName": "e", "parentKey": "lab/t/u-1", "parentRunId": ""}}


def tracker(client: FakeClient, attempt="1", **kwargs) -> Tracker:
    return Tracker(BODY, attempt, client_factory=lambda uri: client, **kwargs)


def test_a_tracker_makes_the_parent_once_and_the_job_run_under_it():
    client = FakeClient()
    t = tracker(client)
    for step in (10, 20):
        t.add("train/loss", 1.0 / step, step)
    assert t.close()
    parents = [r for r in client.runs.values() if r.data.tags[contract.KIND] == "experiment"]
    (job,) = [r for r in client.runs.values() if r.data.tags[contract.KIND] == "job"]
    assert len(parents) == 1 and job.data.tags[contract.PARENT] == parents[0].info.run_id
    assert job.info.status == "FINISHED" and client.steps("train/loss") == [10, 20]
    assert client.params[job.info.run_id]["jobHash"] == "h1"


class RacingClient(FakeClient):
    """Its first look misses a parent another creator is making at that moment."""

    def __init__(self):
        super().__init__()
        self.looks = 0

    def search_runs(self, *args, **kwargs):
        self.looks += 1
        return [] if self.looks == 1 else super().search_runs(*args, **kwargs)


def test_two_parents_made_at_once_settle_on_the_oldest():
    client = RacingClient()
    experiment_id = contract.ensure_experiment(client, "e")
    first = client.create_run(experiment_id, tags=contract.parent_tags("k", "t")).info.run_id
    assert contract.ensure_parent(client, experiment_id, "k", "t") == first
    assert [r.info.run_id for r in client.runs.values()] == [first], "the newer parent deleted itself"


def test_a_resumed_attempt_continues_the_run_and_logs_no_step_twice():
    client = FakeClient()
    first = tracker(client)
    for step in (10, 20, 30):  # the checkpoint was at 20; 30 was logged before the attempt died
        first.add("train/loss", 1.0, step)
    first.flush()
    second = tracker(client, attempt="2")
    for step in (30, 40):  # the resumed attempt trains 21.. again
        second.add("train/loss", 0.5, step)
    second.add("dev/score", 0.7, 40)
    assert second.close()
    assert len([r for r in client.runs.values() if r.data.tags[contract.KIND] == "job"]) == 1
    assert client.steps("train/loss") == [10, 20, 30, 40] and client.steps("dev/score") == [40]
    job = next(r for r in client.runs.values() if r.data.tags[contract.KIND] == "job")
    assert job.data.tags["attempt"] == "2"


def test_a_server_that_is_down_costs_training_no_time_and_gets_everything_when_back(caplog):
    client = FakeClient()
    client.down = True
    t = tracker(client, flush_seconds=0.5)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="stilts_trainer"):
        for step in range(1, 2001):
            t.add("train/loss", 1.0, step)
        added = time.perf_counter() - started
        assert not t.flush()  # a server that refuses: the flush ends at its first failed try
    assert added < 0.5, f"adding 2,000 points took {added:.3f} s"
    assert t.waited < 0.4
    assert any("unreachable" in r.message for r in caplog.records)
    client.down = False  # the server returns before the phase ends: nothing is lost
    t.flush_seconds = 10
    assert t.close() and client.steps("train/loss") == list(range(1, 2001))


def test_a_hanging_server_holds_a_phases_end_no_longer_than_the_bound():
    client = FakeClient()
    client.slow = 3.0
    t = tracker(client, flush_seconds=0.5)
    started = time.perf_counter()
    for step in range(100):
        t.add("train/loss", 1.0, step)
    added = time.perf_counter() - started
    assert not t.close()
    assert added < 0.1 and 0.45 < t.waited < 1.0


def test_a_full_queue_drops_new_points_with_a_warning(caplog):
    client = FakeClient()
    client.down = True
    t = tracker(client, queue_points=10, flush_seconds=0.1)
    with caplog.at_level(logging.WARNING, logger="stilts_trainer"):
        for step in range(25):
            t.add("train/loss", 1.0, step)
        t.close()
    assert 10 <= t.dropped <= 15  # the thread may hold a batch outside the queue
    assert any("dropping new points" in r.message for r in caplog.records)
    assert any("were dropped" in r.message for r in caplog.records)


def test_the_tracker_thread_is_a_daemon_and_stops_after_close():
    client = FakeClient()
    t = tracker(client)
    assert t._thread.daemon
    t.close()
    t._thread.join(2)
    assert not t._thread.is_alive()
    assert not [th for th in threading.enumerate() if th is t._thread]
