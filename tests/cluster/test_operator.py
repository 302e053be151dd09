"""The operator against the real API server and the real Kubeflow training operator; a pod driver
plays the kubelet (no containers run here)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from stilts.spec import GROUP, PLURAL, VERSION
from stilts_contract.names import Exit

from .harness import free_port, start, wait_until

pytestmark = pytest.mark.cluster

SPEC = {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1], "baseline": True,
        "maxConcurrentJobs": 2, "retries": {"limit": 3, "backoffSeconds": 1},
        "storage": {"size": "1Gi"},
        "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                      {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe", "workers": 2,
                       "gpusPerWorker": 0, "moe": {"experts": 4, "expertParallelSize": 2}}]}


def experiment(name="exp", **changes):
    spec = json.loads(json.dumps(SPEC))
    spec.update(changes)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TransferExperiment", "metadata": {"name": name},
            "spec": spec}


class Operator:
    def __init__(self, plane, kubeconfig=None, env: dict | None = None):
        self.plane, self.process, self.port = plane, None, free_port()
        self.kubeconfig = kubeconfig or plane.kubeconfig
        self.extra_env = env or {}

    def start(self):
        env = {"KUBECONFIG": str(self.kubeconfig), "STILTS_RESYNC_SECONDS": "2",
               "STILTS_METRICS_PORT": str(self.port), "STILTS_HEALTH_PORT": str(free_port()),
               "PYTHONUNBUFFERED": "1",
               # the test cluster's self-signed certificate: the warning would drown the log
               "PYTHONWARNINGS": "ignore:Unverified HTTPS request", **self.extra_env}
        self.process = start(f"stilts-operator-{time.time_ns()}", [sys.executable, "-m", "stilts.cli", "operator"],
                             self.plane.workdir, env=env)
        return self

    def kill(self):
        os.killpg(self.process.popen.pid, signal.SIGKILL)
        self.process.popen.wait()

    def stop(self):
        self.process.stop()


def install_trainjob_runtime(plane) -> None:
    """The chart's ClusterTrainingRuntime, as `helm install --set jobBackend=trainjob` renders it."""
    import yaml
    from tests.chart.test_chart import CHART, HELM
    rendered = subprocess.run([HELM, "template", "stilts", str(CHART), "--set", "jobBackend=trainjob"],
                              capture_output=True, text=True, check=True).stdout
    runtime = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ClusterTrainingRuntime")
    try:
        client.CustomObjectsApi(plane.api_client()).create_cluster_custom_object(
            "trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", runtime)
    except ApiException as err:
        assert err.status == 409


@pytest.fixture(params=["pytorchjob", "trainjob"])
def backend(request, control_plane):
    """The operator's job backend (the chart's `jobBackend`), with the controllers it needs: the training
    operator for PyTorchJobs; Trainer v2, JobSet (and Kueue) for TrainJobs."""
    if request.param == "trainjob":
        request.getfixturevalue("trainer_v2")
        install_trainjob_runtime(control_plane)
    else:
        request.getfixturevalue("training_operator")
    return request.param


@pytest.fixture
def operator(control_plane, backend, namespace):
    """The operator with the chosen backend; the test's namespace enforces Pod Security "restricted", so
    every pod either backend's controllers create from stilts' objects passes the real admission."""
    client.CoreV1Api(control_plane.api_client()).patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    op = Operator(control_plane, env={"STILTS_JOB_BACKEND": backend}).start()
    op.backend = backend
    yield op
    op.stop()


class PodDriver:
    """Plays the kubelet for an experiment's jobs: Pending -> Running -> Succeeded (or Failed, as told per
    `backbone-task-phase`, with an exit code), leaving the trainer's summary as the leader's termination
    message. Jobs named in `hold` keep their pods unscheduled. Records, per child, when its first pod was
    seen and when its leader finished."""

    def __init__(self, plane, simulator, namespace, fail: dict[str, int] | None = None, exit_code: int = 1,
                 hold: set[str] | None = None, backend: str = "pytorchjob",
                 message: str = "stilts_trainer: error: simulated failure", node: str = "", world: bool = False):
        from stilts import backends
        self.custom = client.CustomObjectsApi(plane.api_client())
        self.sim, self.namespace = simulator, namespace
        self.fail, self.exit_code, self.message = dict(fail or {}), exit_code, message
        self.pods_seen: Counter = Counter()  # per child, pods it had (a replaced pod counts again)
        self._uids: set[str] = set()
        self.node = node  # bind pods to this Node: deleting one is then graceful, as on a real cluster
        self.terminating: dict[str, float] = {}
        self.hold = set(hold or ())
        self.backend = backends.get(backend)
        self.child_label = {"pytorchjob": "training.kubeflow.org/job-name",
                            "trainjob": "jobset.sigs.k8s.io/jobset-name"}[backend]
        self.first_seen: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.max_active = 0
        self.order: list[str] = []
        self.world = world  # summaries from tests/operator/world_trainer.py, as a local run of it gives
        self.phases_done: Counter = Counter()  # children whose leader succeeded, by phase

    def own(self, pod: dict, child: str, now: float, done: dict) -> bool:
        """A subclass that runs some pods itself handles them here (True: nothing more to do)."""
        return False

    def _bind(self, pod: dict) -> None:
        if self.node and not pod["spec"].get("nodeName"):
            self.sim.core.create_namespaced_pod_binding(
                pod["metadata"]["name"], self.namespace, {"metadata": {"name": pod["metadata"]["name"]},
                                                          "target": {"kind": "Node", "name": self.node}},
                _preload_content=False)

    def job_json(self, child: str) -> dict:
        """What the trainer of this child would read: its ConfigMap's job.json."""
        cm = self.sim.core.read_namespaced_config_map(child, self.namespace)
        return json.loads(cm.data["job.json"])

    def jobs(self):
        b = self.backend
        return self.custom.list_namespaced_custom_object(b.group, b.version, self.namespace, b.plural)["items"]

    def step(self):
        now = time.time()
        pods = self.sim.pods(self.namespace, "stilts.dev/experiment")
        for pod in pods:
            child = pod["metadata"]["labels"].get(self.child_label)
            if child and pod["metadata"]["uid"] not in self._uids:
                self._uids.add(pod["metadata"]["uid"])
                self.pods_seen[child] += 1
            if child and child not in self.first_seen:
                self.first_seen[child] = now
                self.order.append(child)
        live = {p["metadata"]["labels"].get(self.child_label) for p in pods
                if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")}
        self.max_active = max(self.max_active, len(live - set(self.finished)))
        done = {}  # children whose leader ends in this step (a TrainJob's Indexed Job completes only once
        # every pod has)
        for pod in pods:
            labels = pod["metadata"]["labels"]
            child = labels.get(self.child_label)
            phase_now = (pod.get("status") or {}).get("phase")
            if self.own(pod, child, now, done):
                continue
            if phase_now in ("Succeeded", "Failed"):
                if pod["metadata"].get("deletionTimestamp") and pod["spec"].get("nodeName"):
                    self._remove(pod)  # the kubelet's last word on a pod being deleted
                continue
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod, phase_now, now)
                continue
            if child in self.finished:  # its leader ended: the other ranks end too, as torchrun's would
                if not self.backend.is_leader(pod) and phase_now == "Running":
                    self.sim.finish(pod, 0, "")
                continue
            phase = labels["stilts.dev/phase"]
            label = f"{labels['stilts.dev/backbone']}-{labels['stilts.dev/task']}-{phase}"
            if label in self.hold:
                conditions = (pod.get("status") or {}).get("conditions") or []
                if not any(c.get("reason") == "Unschedulable" for c in conditions):
                    self.sim.unschedulable(pod)
                continue
            if phase_now != "Running":
                self._bind(pod)
                self.sim.run(pod)
                continue
            leader = self.backend.is_leader(pod)
            failing = self.fail.get(label, 0)
            if failing:
                if leader:
                    self.fail[label] = failing - 1
                    self.sim.finish(pod, self.exit_code, self.message)
                    if self.exit_code != Exit.PREEMPTED:  # a preempted pod may be replaced in place
                        done[child] = now
                continue
            summary = {"phase": phase, "jobHash": labels["stilts.dev/job-hash"]}
            if self.world and leader:
                from tests.operator import world_trainer
                summary = world_trainer.outcome(self.job_json(child))[0]
            elif phase == "evaluate":
                acc = 0.7 if labels["stilts.dev/task"] == "none" else 0.75
                summary["test"] = {"en": acc, "de": acc - 0.2}
                summary["testItems"] = 1000
            self.sim.finish(pod, 0, json.dumps(summary))
            if leader:
                done[child] = now
                self.phases_done[phase] += 1
        self.finished.update(done)

    def _terminate(self, pod: dict, phase_now: str, now: float) -> None:
        """The kubelet's SIGTERM to a pod being deleted: the trainer takes a moment to commit its
        checkpoint, exits 3, and the kubelet removes the pod."""
        uid = pod["metadata"]["uid"]
        if phase_now == "Running" and now - self.terminating.setdefault(uid, now) >= 2.0:
            self.sim.finish(pod, Exit.PREEMPTED, "")
        elif phase_now != "Running" and pod["spec"].get("nodeName"):
            self._remove(pod)

    def _remove(self, pod: dict) -> None:
        try:
            self.sim.core.delete_namespaced_pod(pod["metadata"]["name"], self.namespace, grace_period_seconds=0)
        except ApiException as err:
            if err.status != 404:
                raise

    def run_until(self, predicate, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.step()
            if predicate():
                return
            time.sleep(0.3)
        statuses = [(e["metadata"]["name"], e.get("status", {}).get("phase"), e.get("status", {}).get("message"),
                     e.get("status", {}).get("counts")) for e in self.custom.list_namespaced_custom_object(
                         GROUP, VERSION, self.namespace, PLURAL)["items"]]
        raise TimeoutError(f"experiment did not reach the expected state: {statuses}")


def get(plane, namespace, name="exp"):
    return client.CustomObjectsApi(plane.api_client()).get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                    PLURAL, name)


def create(plane, namespace, body):
    return client.CustomObjectsApi(plane.api_client()).create_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                       PLURAL, body)


def phase_is(plane, namespace, *phases, name="exp"):
    return lambda: (get(plane, namespace, name).get("status") or {}).get("phase") in phases


def events(plane, namespace):
    return [e.reason for e in client.CoreV1Api(plane.api_client()).list_namespaced_event(namespace).items]


def stored(plane, namespace, name="exp"):
    """The experiment as `stilts status` sees it: plan, records, results."""
    from stilts import cluster
    return cluster.load(plane.api_client(), namespace, name)


def test_experiment_runs_to_succeeded_in_order_within_the_bound(control_plane, operator, pod_simulator, namespace):
    create(control_plane, namespace, experiment())
    driver = PodDriver(control_plane, pod_simulator, namespace, backend=operator.backend)
    driver.run_until(phase_is(control_plane, namespace, "Succeeded"))
    status = get(control_plane, namespace)["status"]
    assert status["progress"] == "11/11" and status["counts"]["Succeeded"] == 11
    assert (status["running"], status["waiting"], status["failed"]) == (0, 0, 0)
    assert driver.max_active <= 2, "maxConcurrentJobs honoured"
    # Parents before children: each job appeared only after its parent's pods finished.
    seen = stored(control_plane, namespace)
    from stilts import manifests
    stem = manifests.prefix(seen.experiment, 52)
    for job in seen.jobs:
        mine = manifests.child_name(stem, job.hash, seen.records[job.hash]["attempts"])
        for parent in job.depends_on:
            theirs = manifests.child_name(stem, parent, seen.records[parent]["attempts"])
            assert driver.finished[theirs] <= driver.first_seen[mine], (job.name, "started before its parent ended")
    from stilts.metrics import results_table
    results = {(r["backbone"], r["intermediateTask"], r["language"]): r["accuracy"]
               for r in results_table(seen.jobs, seen.results)}
    assert results[("dense", "qqp", "en")] == 0.75 and results[("moe", "none", "de")] == pytest.approx(0.5)
    # Results come home: `stilts report tx/NAME` and `stilts status tx/NAME`, as the README says.
    out = control_plane.workdir / f"report-{namespace}"
    cli = [sys.executable, "-m", "stilts.cli"]
    where = ["-n", namespace, "--kubeconfig", str(control_plane.kubeconfig)]
    r = subprocess.run(cli + ["report", "tx/exp", "--out", str(out)] + where, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["dense/qqp"]["en"]["mean"] == 0.75
    # One seed: its noise cannot be estimated, so there is no interval (the test items alone would
    # understate the uncertainty), and the text shows the mean alone.
    assert report["accuracy"]["dense/qqp"]["en"]["low"] is None, "one seed: no interval"
    assert report["gain"]["moe/qqp"]["de"]["mean"] == pytest.approx(0.05)
    assert report["missing"] == [] and (out / "heatmap.png").stat().st_size > 0
    assert "Research question" in (out / "report.txt").read_text()
    r = subprocess.run(cli + ["status", "tx/exp", "--all"] + where, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("Succeeded") >= 11, r.stdout + r.stderr
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {t: c["status"] for t, c in conditions.items()} == {"Ready": "True", "Progressing": "False",
                                                               "Degraded": "False"}
    assert all(c["lastTransitionTime"] and c["observedGeneration"] == 1 for c in conditions.values())
    assert status["observedGeneration"] == get(control_plane, namespace)["metadata"]["generation"]
    # Two-worker MoE jobs: Master + Worker pods, torchrun told its node count and processes per node.
    moe_job = next(j for j in driver.jobs() if j["metadata"]["labels"]["stilts.dev/backbone"] == "moe")
    if operator.backend == "pytorchjob":
        assert moe_job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    else:
        assert moe_job["spec"]["trainer"]["numNodes"] == 2
        moe_pods = pod_simulator.pods(namespace, f"jobset.sigs.k8s.io/jobset-name={moe_job['metadata']['name']}")
        assert len(moe_pods) == 2 and sum(driver.backend.is_leader(p) for p in moe_pods) == 1
    assert {"ExperimentRunning", "ExperimentSucceeded"} <= set(events(control_plane, namespace))
    assert "JobCreated" not in events(control_plane, namespace), "routine job events stay out of kubectl describe"
    # The claim exists, made by the operator.
    claim = client.CoreV1Api(control_plane.api_client()).read_namespaced_persistent_volume_claim(
        "exp-checkpoints", namespace)
    assert claim.spec.access_modes == ["ReadWriteMany"]
    # Metrics: accuracy and gain over the baseline.
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/metrics", timeout=5).read().decode()
    # Series are per experiment *and* namespace: other tests' experiments named "exp" live beside this one.
    exp = f'experiment="exp",experiment_namespace="{namespace}"'
    assert f'stilts_xnli_accuracy{{backbone="dense",{exp},intermediate_task="qqp",language="en",seed="1"}} 0.75' in text
    assert f'stilts_xnli_gain{{backbone="dense",{exp},intermediate_task="qqp",language="en",seed="1"}} 0.05' in text
    assert "stilts_reconcile_duration_seconds_count" in text and f'stilts_jobs{{{exp},state="Succeeded"}} 11.0' in text


def test_failing_twice_then_succeeding_is_retried_with_backoff(control_plane, operator, pod_simulator, namespace):
    create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
    driver = PodDriver(control_plane, pod_simulator, namespace, fail={"dense-qqp-target": 2}, backend=operator.backend)
    driver.run_until(phase_is(control_plane, namespace, "Succeeded"))
    seen = stored(control_plane, namespace)
    attempts = {j.name: seen.records[j.hash]["attempts"] for j in seen.jobs}
    assert attempts["dense-qqp-s1-target"] == 3 and attempts["dense-none-s1-target"] == 1
    names = [n for n in driver.order if n.endswith(("-1", "-2", "-3"))]
    assert len(names) == len(set(names))
    assert events(control_plane, namespace).count("JobRetrying") == 2


def test_a_job_that_keeps_failing_fails_its_run_only(control_plane, operator, pod_simulator, namespace):
    create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1], retries={"limit": 1,
                                                                                          "backoffSeconds": 1}))
    driver = PodDriver(control_plane, pod_simulator, namespace, fail={"dense-qqp-intermediate": 99},
                       backend=operator.backend)
    driver.run_until(phase_is(control_plane, namespace, "Failed"))
    status = get(control_plane, namespace)["status"]
    seen = stored(control_plane, namespace)
    states = {j.name: seen.records[j.hash] for j in seen.jobs}
    assert states["dense-none-s1-evaluate"]["state"] == "Succeeded", "the baseline run went on"
    assert states["dense-qqp-s1-intermediate"]["state"] == "Failed"
    assert states["dense-qqp-s1-intermediate"]["attempts"] == 2
    assert status["failures"][0]["job"] == "dense-qqp-s1-intermediate"
    assert "simulated failure" in status["failures"][0]["message"] and "simulated failure" in status["message"]
    assert status["counts"]["Blocked"] == 2 and status["failed"] == 3
    assert {c["type"]: c["status"] for c in status["conditions"]}["Degraded"] == "True"


def test_operator_killed_mid_experiment_creates_no_duplicate(control_plane, training_operator, pod_simulator,
                                                             namespace):
    op = Operator(control_plane).start()
    create(control_plane, namespace, experiment())
    driver = PodDriver(control_plane, pod_simulator, namespace)
    driver.run_until(lambda: len(driver.finished) >= 3)
    op.kill()
    driver.step()
    before = {j["metadata"]["name"] for j in driver.jobs()}
    op = Operator(control_plane).start()
    try:
        driver.run_until(phase_is(control_plane, namespace, "Succeeded"))
    finally:
        op.stop()
    per_hash = Counter(j["metadata"]["labels"]["stilts.dev/job-hash"] for j in driver.jobs())
    assert set(per_hash.values()) == {1}, "one PyTorchJob per job: none duplicated across the restart"
    assert len(stored(control_plane, namespace).results) == 11, "every job's result kept"
    assert before <= {j["metadata"]["name"] for j in driver.jobs()}


def test_spec_edit_adds_only_the_new_jobs(control_plane, operator, pod_simulator, namespace):
    create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
    driver = PodDriver(control_plane, pod_simulator, namespace, backend=operator.backend)
    driver.run_until(phase_is(control_plane, namespace, "Succeeded"))
    first = {j["metadata"]["name"]: j["metadata"]["uid"] for j in driver.jobs()}
    client.CustomObjectsApi(control_plane.api_client()).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "exp", {"spec": {"seeds": [1, 2]}})
    driver.run_until(lambda: (get(control_plane, namespace).get("status") or {}).get("progress") == "11/11")
    assert get(control_plane, namespace)["status"]["observedGeneration"] == 2
    after = {j["metadata"]["name"]: j["metadata"]["uid"] for j in driver.jobs()}
    assert all(after[name] == uid for name, uid in first.items()), "finished jobs untouched"
    assert len(after) - len(first) == 5, "seed 2: intermediate, 2 targets, 2 evaluates (pretrain shared)"


def test_deleting_the_experiment_cleans_children_and_keeps_checkpoints(control_plane, operator, pod_simulator,
                                                                       namespace):
    create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
    driver = PodDriver(control_plane, pod_simulator, namespace, backend=operator.backend)
    driver.run_until(lambda: len(driver.jobs()) >= 1)
    client.CustomObjectsApi(control_plane.api_client()).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "exp")
    wait_until(lambda: not driver.jobs(), 120, "children garbage-collected")
    core = client.CoreV1Api(control_plane.api_client())
    wait_until(lambda: not core.list_namespaced_config_map(
        namespace, label_selector="stilts.dev/experiment=exp").items, 120, "job ConfigMaps garbage-collected")
    assert core.read_namespaced_persistent_volume_claim("exp-checkpoints", namespace), "retainOnDelete keeps it"
    with pytest.raises(ApiException) as info:
        get(control_plane, namespace)
    assert info.value.status == 404, "no finalizer held it"


def test_a_permanent_failure_is_not_retried(control_plane, operator, pod_simulator, namespace):
    create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
    driver = PodDriver(control_plane, pod_simulator, namespace, fail={"dense-qqp-intermediate": 1}, exit_code=2,
                       backend=operator.backend)
    driver.run_until(phase_is(control_plane, namespace, "Failed"))
    seen = stored(control_plane, namespace)
    record = next(seen.records[j.hash] for j in seen.jobs if j.name == "dense-qqp-s1-intermediate")
    assert (record["state"], record["attempts"], record["reason"]) == ("Failed", 1, "BadInput")
    assert "simulated failure" in record["message"]
    assert "JobRetrying" not in events(control_plane, namespace)


def test_pods_killed_without_a_message_are_retried_and_the_experiment_finishes_through_operator_restarts(
        control_plane, operator, pod_simulator, namespace):
    """Node loss as the API shows it: the leader's container ended by SIGKILL (exit 137, no termination
    message); meanwhile the operator is SIGKILLed at random moments and started again."""
    import random

    create(control_plane, namespace, experiment(retries={"limit": 2, "backoffSeconds": 1}))
    driver = PodDriver(control_plane, pod_simulator, namespace, fail={"dense-qqp-target": 1, "moe-qqp-intermediate": 2},
                       exit_code=137, message="", backend=operator.backend)
    chance, restarts = random.Random(f"restarts-{operator.backend}"), 0
    done = phase_is(control_plane, namespace, "Succeeded", "Failed")
    deadline = time.time() + 300
    while not done():
        assert time.time() < deadline, "the experiment did not finish"
        until = time.time() + chance.uniform(0.5, 4.0)
        while time.time() < until and not done():
            driver.step()
            time.sleep(0.2)
        if not done() and restarts < 6:
            operator.kill()
            driver.step()
            operator.start()
            restarts += 1
    status = get(control_plane, namespace)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "11/11", status.get("message")
    assert restarts >= 3, "the operator was restarted mid-experiment"
    seen = stored(control_plane, namespace)
    attempts = {j.name: seen.records[j.hash]["attempts"] for j in seen.jobs}
    assert attempts["dense-qqp-s1-target"] == 2 and attempts["moe-qqp-s1-intermediate"] == 3
    assert sum(attempts.values()) == 11 + 3, "every other job ran once: no duplicate across restarts"
    per_attempt = Counter((j["metadata"]["labels"]["stilts.dev/job-hash"], j["metadata"]["labels"]["stilts.dev/attempt"])
                          for j in driver.jobs())
    assert set(per_attempt.values()) == {1}, "one child per attempt"
    assert len(seen.results) == 11


def test_a_preempted_job_resumes_without_spending_a_retry(control_plane, operator, pod_simulator, namespace):
    """SIGTERM (exit 3) twice, an eviction once, with no retries allowed: the experiment still finishes.
    The pods carry the spec's grace period, and torchrun a shorter shutdown timeout within it."""
    # The PyTorchJob takes the grace per experiment; the TrainJob from the chart's runtime (default 300).
    grace = 45 if operator.backend == "pytorchjob" else 300
    spec = experiment(backbones=SPEC["backbones"][:1], retries={"limit": 0, "backoffSeconds": 1},
                      scheduling={"terminationGracePeriodSeconds": grace} if operator.backend == "pytorchjob" else {})
    create(control_plane, namespace, spec)
    core = client.CoreV1Api(control_plane.api_client())
    node = f"spot-{namespace}"[:63]
    core.create_node({"metadata": {"name": node}})
    driver = PodDriver(control_plane, pod_simulator, namespace, fail={"dense-qqp-target": 2},
                       exit_code=Exit.PREEMPTED, message="", backend=operator.backend, node=node)
    evicted = []

    def evict_one_intermediate():
        if evicted:
            return phase_is(control_plane, namespace, "Succeeded", "Failed")()
        for pod in pod_simulator.pods(namespace, "stilts.dev/phase=intermediate"):
            if (pod.get("status") or {}).get("phase") == "Running" and driver.backend.is_leader(pod):
                container = pod["spec"]["containers"][0]
                assert pod["spec"]["terminationGracePeriodSeconds"] == grace
                shutdown = [e["value"] for e in container["env"] if e["name"] == "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]
                assert shutdown == [str(grace - max(5, grace // 10))], shutdown
                core.create_namespaced_pod_eviction(pod["metadata"]["name"], namespace, {
                    "apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod["metadata"]["name"], "namespace": namespace}})
                evicted.append(pod["metadata"]["name"])
        return False

    driver.run_until(evict_one_intermediate, timeout=300)
    assert evicted, "a running intermediate pod was evicted"
    status = get(control_plane, namespace)["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    seen = stored(control_plane, namespace)
    records = {j.name: seen.records[j.hash] for j in seen.jobs}
    for job in ("dense-qqp-s1-target", "dense-qqp-s1-intermediate"):
        rec = records[job]
        assert rec["attempts"] - rec.get("preemptions", 0) == 1, (job, rec)
    if operator.backend == "pytorchjob":
        # The training operator fails the PyTorchJob; stilts starts the next attempt at once, uncounted.
        assert records["dense-qqp-s1-target"]["preemptions"] == 2
        assert "JobPreempted" in events(control_plane, namespace)
    else:
        # The chart's runtime replaces the pod in place (podFailurePolicy: Ignore): same attempt, new pod.
        assert records["dense-qqp-s1-target"]["attempts"] == 1
    assert "JobRetrying" not in events(control_plane, namespace), "no retry was spent"


def test_stilts_tensorboard_starts_a_restricted_pod_owned_by_the_experiment(control_plane, operator, pod_simulator,
                                                                              namespace):
    create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
    driver = PodDriver(control_plane, pod_simulator, namespace, backend=operator.backend)
    driver.run_until(lambda: len(driver.jobs()) >= 1)
    cli = [sys.executable, "-m", "stilts.cli", "tensorboard", "tx/exp", "--no-forward", "-n", namespace,
           "--kubeconfig", str(control_plane.kubeconfig), "--backend", operator.backend]
    for _ in range(2):  # again: the same pod, kept
        r = subprocess.run(cli, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    assert f"kubectl port-forward -n {namespace} pod/stilts-tensorboard-exp 6006:6006" in r.stdout
    pod = client.CoreV1Api(control_plane.api_client()).read_namespaced_pod("stilts-tensorboard-exp", namespace)
    # Admitted under Pod Security "restricted" (the fixture's namespace); read-only on the experiment's claim.
    assert pod.metadata.owner_references[0].name == "exp" and pod.spec.automount_service_account_token is False
    assert pod.spec.volumes[0].persistent_volume_claim.read_only
    spec = pod.spec.containers[0].command[pod.spec.containers[0].command.index("--logdir_spec") + 1]
    runs = dict(item.split(":", 1) for item in spec.split(","))
    seen = stored(control_plane, namespace)
    training = {j.name: j.hash for j in seen.jobs if j.phase != "evaluate"}
    assert runs == {name: f"/workspace/exp/{h}/tensorboard" for name, h in training.items()}


@pytest.mark.parametrize("backend", ["trainjob"], indirect=True)
def test_the_trainers_progress_is_a_status_the_trainjob_api_accepts(control_plane, operator, pod_simulator,
                                                                    namespace):
    """What rank 0 posts to Trainer's status server (TrainJobStatus gate) is applied as the TrainJob's
    status.trainerStatus: here the real API server checks it against Trainer's CRD schema. (The
    status server itself authenticates pods by OIDC, which this control plane does not serve.)"""
    from stilts_trainer.trainer_status import payload

    create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
    driver = PodDriver(control_plane, pod_simulator, namespace, backend=operator.backend)
    driver.run_until(lambda: len(driver.jobs()) >= 1)
    name = driver.jobs()[0]["metadata"]["name"]
    api = client.CustomObjectsApi(control_plane.api_client())
    sent = payload(120, 400, 812.4, {"loss": 0.61, "tokensPerSecond": 48210.0, "devScore": 0.71}, time.time())
    api.patch_namespaced_custom_object_status("trainer.kubeflow.org", "v1alpha1", namespace, "trainjobs", name,
                                              {"status": sent})
    got = api.get_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", namespace, "trainjobs", name)
    assert got["status"]["trainerStatus"] == sent["trainerStatus"]
    assert got["status"]["trainerStatus"]["progressPercentage"] == 30
    with pytest.raises(ApiException) as info:  # the schema is enforced: so the accepted payload was checked
        api.patch_namespaced_custom_object_status("trainer.kubeflow.org", "v1alpha1", namespace, "trainjobs", name,
                                                  {"status": {"trainerStatus": {**sent["trainerStatus"],
                                                                                "progressPercentage": 150}}})
    assert info.value.status == 422


KUEUE = ("kueue.x-k8s.io", "v1beta2")


def ended(child: dict) -> bool:
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
               for c in (child.get("status") or {}).get("conditions", []))


def test_kueue_admits_what_fits_the_gpu_quota_and_the_rest_waits_queued(control_plane, trainer_v2, pod_simulator,
                                                                        namespace):
    """A ClusterQueue with 2 GPUs, a grid that could run 5 one-GPU jobs (and a two-GPU MoE job) at once:
    Kueue admits what fits, the rest shows Queued (not running, not failing, its start deadline not
    counting), and the experiment still completes."""
    install_trainjob_runtime(control_plane)
    custom = client.CustomObjectsApi(control_plane.api_client())
    for plural, body in (
        ("resourceflavors", {"metadata": {"name": "gpu"}}),
        ("clusterqueues", {"metadata": {"name": f"cq-{namespace}"}, "spec": {
            "namespaceSelector": {}, "resourceGroups": [{
                "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                "flavors": [{"name": "gpu", "resources": [{"name": "cpu", "nominalQuota": "1000"},
                                                          {"name": "memory", "nominalQuota": "100Ti"},
                                                          {"name": "nvidia.com/gpu", "nominalQuota": "2"}]}]}]}}),
    ):
        try:
            custom.create_cluster_custom_object(*KUEUE, plural, {"apiVersion": "/".join(KUEUE),
                                                                 "kind": {"resourceflavors": "ResourceFlavor",
                                                                          "clusterqueues": "ClusterQueue"}[plural],
                                                                 **body})
        except ApiException as err:
            assert err.status == 409
    custom.create_namespaced_custom_object(*KUEUE, namespace, "localqueues", {
        "apiVersion": "/".join(KUEUE), "kind": "LocalQueue", "metadata": {"name": "team"},
        "spec": {"clusterQueue": f"cq-{namespace}"}})
    backbones = [dict(b, gpusPerWorker=1) for b in SPEC["backbones"]]
    op = Operator(control_plane, env={"STILTS_JOB_BACKEND": "trainjob"}).start()
    try:
        create(control_plane, namespace, experiment(backbones=backbones, maxConcurrentJobs=5, startDeadlineSeconds=8,
                                                    scheduling={"queueName": "team"}))
        driver = PodDriver(control_plane, pod_simulator, namespace, backend="trainjob")
        most_gpus, queued_seen = 0, 0
        graces: set = set()

        def watch():
            nonlocal most_gpus, queued_seen
            admitted = [j for j in driver.jobs() if not j["spec"].get("suspend") and not ended(j)]
            gpus = sum(j["spec"]["trainer"]["numNodes"] * int(j["spec"]["trainer"]["resourcesPerNode"]["requests"]
                                                              ["nvidia.com/gpu"]) for j in admitted)
            most_gpus = max(most_gpus, gpus)
            graces.update(p["spec"].get("terminationGracePeriodSeconds")
                          for p in pod_simulator.pods(namespace, "stilts.dev/experiment"))
            status = get(control_plane, namespace).get("status") or {}
            queued_seen = max(queued_seen, (status.get("counts") or {}).get("Queued", 0))
            return status.get("phase") == "Succeeded"
        driver.run_until(watch, timeout=600)
    finally:
        op.stop()
    print(f"kueue: at most {most_gpus} GPUs admitted at once, up to {queued_seen} jobs queued")
    assert most_gpus <= 2, f"{most_gpus} GPUs admitted at once under a quota of 2"
    assert queued_seen >= 1, "jobs beyond the quota showed as Queued"
    # Kueue rewrites each TrainJob it admits through Trainer's API types (its own runtime patch); JobSet
    # then refuses any change to the template. With Trainer v2.3 a runtime patch's grace period was dropped
    # here; Kueue v0.17's own pair, Trainer v2.2, carries the grace in the runtime, and pods keep it.
    assert graces == {300}, f"pods of admitted TrainJobs have the runtime's grace period: {graces}"
    seen = stored(control_plane, namespace)
    assert all(r["state"] == "Succeeded" and r["attempts"] == 1 for r in seen.records.values()), seen.records
    assert "JobRetrying" not in events(control_plane, namespace) and "JobFailed" not in events(control_plane, namespace)
    labels = {j["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") for j in driver.jobs()}
    assert labels == {"team"}


def test_stilts_logs_reads_the_live_leader_then_the_volume_once_the_pods_are_gone(
        control_plane, training_operator, pod_simulator, namespace):
    """`stilts logs tx/NAME JOB`: while the job's leader pod exists, its log through the API server's
    pods/log proxy; once the pods are gone, the job's train.log from the volume (every attempt's, so a
    failed attempt's log survives its retry), read by a short-lived pod. A fake kubelet serves logs."""
    from stilts import cluster
    from .harness import FakeKubelet
    core = client.CoreV1Api(control_plane.api_client())
    volume = {}  # path on the volume -> content, as the trainer appends it

    def printed(ns, pod):
        if pod.startswith("stilts-read-"):  # `cat PATH` of the claim
            return volume.get(core.read_namespaced_pod(pod, ns).spec.containers[0].command[-1])
        return f"log of {pod}\n"
    kubelet = FakeKubelet(control_plane, printed)
    op = Operator(control_plane).start()
    try:
        create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
        driver = PodDriver(control_plane, pod_simulator, namespace, fail={"dense-qqp-target": 1})
        driver.run_until(phase_is(control_plane, namespace, "Succeeded"))
    finally:
        op.stop()
    seen = cluster.load(control_plane.api_client(), namespace, "exp")
    job = next(j for j in seen.jobs if j.name == "dense-qqp-s1-target")
    assert seen.records[job.hash]["attempts"] == 2
    cli = [sys.executable, "-m", "stilts.cli", "logs", "tx/exp", "dense-qqp-s1-target", "-n", namespace,
           "--kubeconfig", str(control_plane.kubeconfig)]
    leader = next(p for p in pod_simulator.pods(namespace, f"stilts.dev/job-hash={job.hash},stilts.dev/attempt=2")
                  if driver.backend.is_leader(p))
    kubelet.bind(leader)
    live = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert live.returncode == 0 and live.stdout == f"log of {leader['metadata']['name']}\n", live.stderr

    core.delete_collection_namespaced_pod(namespace, label_selector=f"stilts.dev/job-hash={job.hash}")
    wait_until(lambda: not pod_simulator.pods(namespace, f"stilts.dev/job-hash={job.hash}"), 60, "the job's pods gone")
    reader = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def read_pod():
            pods = [p for p in pod_simulator.pods(namespace, "app.kubernetes.io/managed-by")
                    if p["metadata"]["name"].startswith("stilts-read-")]
            return pods[0] if pods else None
        pod = wait_until(read_pod, 60, "stilts logs to start a pod that reads the volume")
        path = pod["spec"]["containers"][0]["command"][-1]
        assert path.endswith(f"/{job.hash}/train.log"), path
        volume[path] = "attempt 1: stilts_trainer: error: simulated failure\nattempt 2: done\n"
        assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
        kubelet.bind(pod)
        pod_simulator.finish(pod, 0, "")
        out, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
        kubelet.stop()
    assert reader.returncode == 0, err
    assert out == volume[path], "every attempt's log, the failed one included"
    assert not [p for p in pod_simulator.pods(namespace, "app.kubernetes.io/managed-by")
                if p["metadata"]["name"].startswith("stilts-read-")], "the reading pod is deleted"


SEQUENTIAL = {"dataSource": "synthetic", "intermediateTasks": ["anli", "qqp"], "baseline": True,
              "maxConcurrentJobs": 16, "retries": {"limit": 3, "backoffSeconds": 1}, "storage": {"size": "1Gi"},
              "target": {"languages": ["de", "en", "sw"]},
              "answer": {"targetHalfWidth": 3, "firstSeeds": 3, "seedsPerLook": 1, "maxSeeds": 8},
              "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                            {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe", "gpusPerWorker": 0,
                             "moe": {"experts": 4, "expertParallelSize": 1}}]}


def test_a_sequential_experiment_adds_seeds_after_its_first_look_and_decides_as_the_local_run(
        control_plane, training_operator, pod_simulator, namespace, tmp_path):
    """spec.answer on the cluster: the first wave's seeds, a look once its evaluate jobs end, the next
    wave's jobs, until every comparison is answered. The operator is SIGKILLed around the first looks
    (as the last evaluate job of a wave ends, and moments later) and restarted: no look is skipped or
    taken twice, and the looks, decisions and intervals are those of a local run of the same spec. Both
    run tests/operator/world_trainer.py's world; on the cluster a fake kubelet serves each job's log, so
    the per-item results come home as they do from real pods, and the cluster report is as sharp as the
    local one."""
    from stilts import local, report as reports
    from stilts.spec import parse_experiment
    from tests.operator import world_trainer
    from .harness import FakeKubelet

    doc = experiment(**{k: v for k, v in SEQUENTIAL.items()})
    doc["spec"].pop("seeds", None)
    ex = local.LocalExecutor(parse_experiment(doc), root=tmp_path / "runs", echo=False)
    ex.trainer = [sys.executable, str(Path(world_trainer.__file__))]
    assert ex.run(poll_seconds=0.01)
    assert len(ex.looks) >= 2 and ex.looks[0]["decision"] == "continue", "the world needs more than one wave"
    local_report = reports.build(reports.from_directory(ex.dir))

    driver = PodDriver(control_plane, pod_simulator, namespace, world=True, node=FakeKubelet.NODE)

    def printed(ns, pod_name):
        pod = pod_simulator.core.read_namespaced_pod(pod_name, ns)
        return world_trainer.log(driver.job_json(pod.metadata.labels[driver.child_label]))
    kubelet = FakeKubelet(control_plane, printed)
    op = Operator(control_plane).start()
    kills = 0
    try:
        create(control_plane, namespace, doc)

        per_seed = sum(1 for j in ex.jobs if j.phase == "evaluate" and j.seed == 1)
        for look, delay in zip(ex.looks, (0.0, 0.4, 0.0)):  # kill as a wave's last evaluate ends, and after
            deadline = time.time() + 300
            while driver.phases_done["evaluate"] < look["seeds"] * per_seed and time.time() < deadline:
                driver.step()
                time.sleep(0.2)
            time.sleep(delay)
            op.kill()
            kills += 1
            op = Operator(control_plane).start()
            driver.run_until(lambda: len(stored(control_plane, namespace).looks) >= look["look"], timeout=120)
        driver.run_until(phase_is(control_plane, namespace, "Succeeded"), timeout=300)
    finally:
        op.stop()
        kubelet.stop()
    assert kills >= 2, "the operator was killed around the looks"
    seen = stored(control_plane, namespace)
    cluster = [(look["look"], look["seeds"], look["decision"]) for look in seen.looks]
    assert cluster == [(look["look"], look["seeds"], look["decision"]) for look in ex.looks], \
        "the same looks as the local run: none skipped, none repeated"
    def figures(look):
        return {(key, field): value for key, c in look["comparisons"].items() for field, value in c.items()}
    for mine, theirs in zip(seen.looks, ex.looks):
        assert figures(mine) == pytest.approx(figures(theirs)), "the same figures at every look"
    # Events are best effort (kopf posts them from a queue after the looks are written): a SIGKILL may drop
    # the one in flight, never repeat one. The looks themselves are durable (records, status): checked above.
    posted = events(control_plane, namespace).count("Look")
    assert len(ex.looks) - kills <= posted <= len(ex.looks), "an event per look, none repeated"
    status = get(control_plane, namespace)["status"]
    assert status["answer"]["decision"] == ex.looks[-1]["decision"] and status["answer"]["seeds"] == ex.looks[-1]["seeds"]
    assert len(seen.items) == sum(1 for j in seen.jobs if j.phase == "evaluate"), "every run's items came home"
    remote = reports.build(reports.from_cluster(seen))
    assert remote["itemsMissing"] == 0
    for key, c in local_report["answer"]["comparisons"].items():
        mine = remote["answer"]["comparisons"][key]
        assert (mine["low"], mine["high"], mine["decided"]) == pytest.approx((c["low"], c["high"], c["decided"])), \
            "the cluster report is as sharp as the local one"


class RealTrainerDriver(PodDriver):
    """Plays the kubelet with real trainer processes for the pods of `phases`: a pod that runs starts
    `python -m stilts_trainer.launch` on its job.json (the volume's paths moved under `root`); a pod being
    deleted (an eviction) gets SIGTERM, as a kubelet sends it to the pod's first process, and ends with the
    process's real exit code and termination message. Other pods are simulated as PodDriver does."""

    def __init__(self, *args, phases: tuple[str, ...], root: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.phases, self.root = phases, root
        self.processes: dict[str, subprocess.Popen] = {}  # pod uid -> its trainer
        self.missing: dict[str, int] = {}                  # pod uid -> steps its pod was not listed
        self.exits: list[tuple[str, int]] = []            # (job label, exit code) of every trainer that ended

    def _paths(self, job: dict) -> dict:
        moved = lambda path: path and str(self.root / Path(path).name)  # noqa: E731
        return {**job, "output": moved(job["output"]), "parent": moved(job.get("parent")),
                "cacheDir": str(self.root / "cache"), "metricsPort": 0}

    def step(self):
        super().step()
        live = {p["metadata"]["uid"] for p in self.sim.pods(self.namespace, "stilts.dev/experiment")}
        for uid, process in list(self.processes.items()):  # a pod removed under its trainer: it ends with it
            if uid not in live and process.poll() is None:
                self.missing[uid] = self.missing.get(uid, 0) + 1
                if self.missing[uid] >= 3:  # not a list that raced the pod's creation
                    process.send_signal(signal.SIGTERM)
                    self.exits.append(("gone", process.wait()))
                    del self.processes[uid]

    def own(self, pod: dict, child: str, now: float, done: dict) -> bool:
        labels = pod["metadata"]["labels"]
        if labels.get("stilts.dev/phase") not in self.phases:
            return False
        uid, phase_now = pod["metadata"]["uid"], (pod.get("status") or {}).get("phase")
        process = self.processes.get(uid)
        if phase_now in ("Succeeded", "Failed"):
            if pod["metadata"].get("deletionTimestamp"):
                self._remove(pod)
            return True
        if process is None:
            if pod["metadata"].get("deletionTimestamp"):
                self._remove(pod)
            elif phase_now != "Running":
                self._bind(pod)  # bound to a node, a deleted pod is deleted gracefully: SIGTERM, then its exit
                self.sim.run(pod)
            else:
                job = self._paths(self.job_json(child))
                path = self.root / f"{uid}.json"
                path.write_text(json.dumps(job))
                (self.root / f"{uid}.msg").touch()  # as the kubelet mounts /dev/termination-log
                self.processes[uid] = subprocess.Popen(
                    [sys.executable, "-m", "stilts_trainer.launch", "--standalone", "--nproc-per-node", "1",
                     "-m", "stilts_trainer", "--job", str(path)], stdout=open(self.root / f"{uid}.log", "w"),
                    stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1", "STILTS_TERMINATION_LOG": str(self.root / f"{uid}.msg"),
                         "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "60"})
            return True
        if pod["metadata"].get("deletionTimestamp") and uid not in self.terminating:
            self.terminating[uid] = now
            process.send_signal(signal.SIGTERM)  # the kubelet's: to the pod's first process, the launcher
        code = process.poll()
        if code is not None:
            message = (self.root / f"{uid}.msg").read_text() if (self.root / f"{uid}.msg").is_file() else ""
            self.exits.append((f"{labels['stilts.dev/backbone']}-{labels['stilts.dev/phase']}", code))
            del self.processes[uid]
            self.sim.finish(pod, code, message)
            if self.backend.is_leader(pod):
                done[child] = now
                if code == 0:
                    self.phases_done[labels["stilts.dev/phase"]] += 1
        return True

    def training(self, uid: str) -> bool:
        """Whether this pod's trainer is in its training loop (it has logged a step)."""
        log = self.root / f"{uid}.log"
        return log.is_file() and re.search(r"INFO step \d+/", log.read_text(errors="replace")) is not None

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_real_trainers_evicted_past_the_bound_and_a_killed_worker_are_recorded_as_they_happened(
        control_plane, training_operator, pod_simulator, namespace, tmp_path):
    """The pretrain job runs as a real trainer process per pod; the test evicts its pod three times (the
    kubelet's SIGTERM reaches the real launcher: it commits a checkpoint and exits 3), past
    preemptionLimit 2: the first two are preemptions, resumed without a retry, the third a failure named
    PreemptionLimit that spends the one retry. Then a worker of the next attempt is SIGKILLed (the real
    launcher exits 1: a counted failure, though it was not signalled), and the attempt after it resumes from
    the checkpoint and finishes. The operator's records and events say exactly that."""
    import psutil

    spec = experiment(backbones=SPEC["backbones"][:1], intermediateTasks=[],
                      retries={"limit": 3, "backoffSeconds": 1, "preemptionLimit": 2},
                      training={"pretrain": {"maxSteps": 200, "batchSize": 16, "microBatchSize": 16,
                                             "maxSeqLength": 32}})
    create(control_plane, namespace, spec)
    core = client.CoreV1Api(control_plane.api_client())
    node = f"real-{namespace}"[:63]
    core.create_node({"metadata": {"name": node}})
    driver = RealTrainerDriver(control_plane, pod_simulator, namespace, node=node, phases=("pretrain",),
                               root=tmp_path)
    op = Operator(control_plane).start()
    evictions, killed = 0, 0
    try:
        def next_disruption() -> bool:
            nonlocal evictions, killed
            for pod in pod_simulator.pods(namespace, "stilts.dev/phase=pretrain"):
                uid = pod["metadata"]["uid"]
                if uid not in driver.processes or driver.processes[uid].poll() is not None \
                        or pod["metadata"].get("deletionTimestamp") or not driver.training(uid):
                    continue
                if evictions < 3:
                    core.create_namespaced_pod_eviction(pod["metadata"]["name"], namespace, {
                        "apiVersion": "policy/v1", "kind": "Eviction",
                        "metadata": {"name": pod["metadata"]["name"], "namespace": namespace}})
                    evictions += 1
                elif not killed:
                    workers = psutil.Process(driver.processes[uid].pid).children(recursive=True)
                    for worker in workers:
                        worker.kill()
                    killed = len(workers)
            return killed > 0 and phase_is(control_plane, namespace, "Succeeded", "Failed")()
        driver.run_until(next_disruption, timeout=900)
    finally:
        driver.stop()
        op.stop()
    status = get(control_plane, namespace)["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    codes = [code for label, code in driver.exits]
    assert codes[-2:] == [1, 0] and set(codes[:-2]) == {3} and len(codes) >= 5, driver.exits
    stopped = len(codes) - 2  # evicted attempts: each real launcher exited 3
    seen = stored(control_plane, namespace)
    pretrain = next(seen.records[j.hash] for j in seen.jobs if j.phase == "pretrain")
    assert (pretrain["attempts"], pretrain["preemptions"]) == (len(codes), 2), (json.dumps(pretrain), driver.exits,
                                                                                events(control_plane, namespace))
    found = events(control_plane, namespace)
    assert found.count("JobPreempted") == 2 and found.count("JobRetrying") == stopped - 2 + 1, found
    messages = [e.message for e in core.list_namespaced_event(namespace).items if e.reason == "JobRetrying"]
    assert sum("PreemptionLimit" in m and "past spec.retries.preemptionLimit (2)" in m for m in messages) == \
        stopped - 2, messages
    assert sum("Exit1" in m for m in messages) == 1, messages
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert logs.count("resumed at step") >= 3, "attempts after a committed checkpoint resumed from it"
