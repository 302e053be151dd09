"""The README's "On a cluster" section, followed literally on the test control plane.

The chart is rendered by real helm and applied; the operator runs as the chart's ServiceAccount, with
nothing but the chart's RBAC; a researcher bound to the built-in `edit` role applies the shipped paper
example, as it is, into a namespace that enforces Pod Security "restricted"; simulated pods drive it
to Succeeded. Variants: a permanent failure, a pod that never schedules, operator kills at random
points, and a delete while the operator is down.
"""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stilts import cluster
from stilts.spec import GROUP, PLURAL, VERSION
from tests.chart.test_chart import CHART, HELM
from tests.conftest import REPO

from .harness import ADMIN_TOKEN, wait_until
from .test_chart_on_cluster import KUBECTL
from .test_operator import Operator, PodDriver, get, phase_is

pytestmark = pytest.mark.cluster
RELEASE_NAMESPACE = "stilts"


def kubectl(plane, *args, kubeconfig=None):
    result = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig or plane.kubeconfig), *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def chart(control_plane, training_operator):
    """`helm install stilts charts/stilts --namespace stilts --create-namespace`, as its objects: rendered by
    helm, applied to the API server (no kubelet runs the operator's Deployment; the tests run the operator
    with the Deployment's identity instead)."""
    core = client.CoreV1Api(control_plane.api_client())
    try:
        core.create_namespace({"metadata": {"name": RELEASE_NAMESPACE}})
    except ApiException as err:
        assert err.status == 409
    rendered = subprocess.run([HELM, "template", "stilts", str(CHART), "--namespace", RELEASE_NAMESPACE],
                              capture_output=True, text=True, check=True).stdout
    path = control_plane.workdir / "chart.yaml"
    path.write_text(rendered)
    kubectl(control_plane, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return {"docs": docs, "env": {e["name"]: e["value"] for e in
                                  deployment["spec"]["template"]["spec"]["containers"][0]["env"]},
            "serviceAccount": deployment["spec"]["template"]["spec"]["serviceAccountName"]}


def operator_kubeconfig(plane, service_account: str):
    """A kubeconfig with a token of the chart's ServiceAccount: what the operator's pod would have."""
    token = client.CoreV1Api(plane.api_client()).create_namespaced_service_account_token(
        service_account, RELEASE_NAMESPACE, {"spec": {"expirationSeconds": 7200}}).status.token
    path = plane.workdir / f"kubeconfig-{service_account}"
    path.write_text(plane.kubeconfig.read_text().replace(ADMIN_TOKEN, token))
    return path


@pytest.fixture
def operator_as_chart(control_plane, chart):
    kubeconfig = operator_kubeconfig(control_plane, chart["serviceAccount"])
    op = Operator(control_plane, kubeconfig=kubeconfig, env={"STILTS_TRAINER_IMAGE": chart["env"]["STILTS_TRAINER_IMAGE"],
                                                             "STILTS_POLICY": chart["env"]["STILTS_POLICY"]}).start()
    yield op
    op.stop()


@pytest.fixture
def restricted(control_plane, namespace):
    """The namespace enforces Pod Security "restricted"; researcher alice has the built-in edit role there."""
    core = client.CoreV1Api(control_plane.api_client())
    core.patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    client.RbacAuthorizationV1Api(control_plane.api_client()).create_namespaced_role_binding(namespace, {
        "metadata": {"name": "alice-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})
    return namespace


def apply_as_researcher(plane, namespace, path):
    """`kubectl apply -f examples/...` by a user with nothing but the built-in edit role (aggregated roles)."""
    def applied():
        kubectl(plane, "apply", "-n", namespace, "-f", str(path), kubeconfig=plane.user_kubeconfig)
        return True
    wait_until(applied, 60, "the aggregated edit role to let the researcher create TransferExperiments")


def small_experiment(namespace, name="exp", **spec):
    body = {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1], "baseline": True,
            "maxConcurrentJobs": 3, "retries": {"limit": 2, "backoffSeconds": 1}, "storage": {"size": "1Gi"},
            "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                          {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe", "workers": 2,
                           "gpusPerWorker": 0, "moe": {"experts": 4, "expertParallelSize": 2}}], **spec}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TransferExperiment",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def write(plane, doc):
    path = plane.workdir / f"{doc['metadata']['name']}-{time.time_ns()}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_readme_quickstart_runs_the_paper_example_to_succeeded(control_plane, chart, operator_as_chart,
                                                                  pod_simulator, restricted):
    apply_as_researcher(control_plane, restricted, REPO / "examples" / "xnli-dense-vs-moe.yaml")
    name = "xnli-dense-vs-moe"
    driver = PodDriver(control_plane, pod_simulator, restricted)
    driver.run_until(phase_is(control_plane, restricted, "Succeeded", name=name), timeout=1500)
    seen = cluster.load(control_plane.api_client(), restricted, name)
    evaluations = [j for j in seen.jobs if j.phase == "evaluate"]
    assert len(seen.results) >= len(evaluations) and all(j.hash in seen.results for j in evaluations)
    assert driver.max_active <= seen.spec.max_concurrent_jobs
    # Every trainer pod was admitted under "restricted" (Worker pods, init container included), and
    # none carries a service-account token.
    pods = pod_simulator.pods(restricted, "stilts.dev/experiment")
    assert any(p["metadata"]["labels"].get("training.kubeflow.org/replica-type") == "worker" for p in pods)
    for pod in pods:
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert not any(v.get("projected") or v.get("secret") for v in pod["spec"]["volumes"])
        assert pod["spec"]["containers"][0]["image"] == chart["env"]["STILTS_TRAINER_IMAGE"]
    # kubectl get tx: phase, done/total, running, waiting, failed, a sequential design's seeds and answer
    # (empty for this fixed design), age, message.
    table = kubectl(control_plane, "get", "tx", name, "-n", restricted)
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "DONE", "RUNNING", "WAITING", "FAILED", "SEEDS", "ANSWER", "AGE",
                      "MESSAGE"], table
    assert f"{len(seen.jobs)}/{len(seen.jobs)}" in table
    # The object stays small at paper scale: records and results live in their ConfigMaps.
    obj = get(control_plane, restricted, name)
    assert len(json.dumps(obj)) < 100_000
    describe = kubectl(control_plane, "describe", "tx", name, "-n", restricted)
    assert len(describe.splitlines()) < 400, "kubectl describe stays readable"
    log = operator_as_chart.process.log.read_text()
    assert "Forbidden" not in log and "(403)" not in log, log[-3000:]


def test_a_permanent_failure_is_not_retried_and_a_retry_rearms_it(control_plane, chart, operator_as_chart,
                                                                   pod_simulator, restricted):
    apply_as_researcher(control_plane, restricted, write(control_plane, small_experiment(restricted)))
    driver = PodDriver(control_plane, pod_simulator, restricted, fail={"dense-qqp-intermediate": 1}, exit_code=2)
    driver.run_until(phase_is(control_plane, restricted, "Failed"), timeout=300)
    status = get(control_plane, restricted)["status"]
    seen = cluster.load(control_plane.api_client(), restricted, "exp")
    record = next(seen.records[j.hash] for j in seen.jobs if j.name == "dense-qqp-s1-intermediate")
    assert record["state"] == "Failed" and record["attempts"] == 1 and record["reason"] == "BadInput"
    assert "simulated failure" in status["message"] and status["failures"][0]["reason"] == "BadInput"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    reasons = [e.reason for e in client.CoreV1Api(control_plane.api_client()).list_namespaced_event(restricted).items]
    assert "JobFailed" in reasons
    # After a fix, `stilts retry tx/exp` re-arms the failed job (and those it blocked), keeping the rest.
    finished_before = {h for h, r in seen.records.items() if r["state"] == "Succeeded"}
    out = subprocess.run([*cli(), "retry", "tx/exp", "-n", restricted, "--kubeconfig", str(control_plane.kubeconfig)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "re-arming 3 failed or blocked job(s)" in out.stdout, out.stdout + out.stderr
    driver.run_until(phase_is(control_plane, restricted, "Succeeded"), timeout=300)
    after = cluster.load(control_plane.api_client(), restricted, "exp")
    assert all(after.records[h]["attempts"] == seen.records[h]["attempts"] for h in finished_before)


def cli():
    import sys
    return [sys.executable, "-m", "stilts.cli"]


def test_a_pod_that_never_schedules_fails_its_attempt_at_the_deadline_with_the_reason(
        control_plane, chart, operator_as_chart, pod_simulator, restricted):
    doc = small_experiment(restricted, startDeadlineSeconds=6, retries={"limit": 0, "backoffSeconds": 1})
    apply_as_researcher(control_plane, restricted, write(control_plane, doc))
    driver = PodDriver(control_plane, pod_simulator, restricted, hold={"dense-none-target"})
    # While it waits, the reason shows.
    driver.run_until(lambda: "Unschedulable" in (get(control_plane, restricted).get("status") or {}).get("message", ""),
                     timeout=120)
    waiting = get(control_plane, restricted)["status"]["waitingJobs"]
    assert any(w["reason"] == "Unschedulable" and "nvidia.com/gpu" in w["message"] for w in waiting)
    driver.run_until(phase_is(control_plane, restricted, "Failed"), timeout=120)
    status = get(control_plane, restricted)["status"]
    failure = next(f for f in status["failures"] if f["job"] == "dense-none-s1-target")
    assert failure["reason"] == "StartDeadlineExceeded" and "Unschedulable" in failure["message"]


def test_operator_killed_at_random_points_creates_no_duplicate_and_loses_no_result(
        control_plane, chart, pod_simulator, restricted):
    kubeconfig = operator_kubeconfig(control_plane, chart["serviceAccount"])
    rng = random.Random(7)
    op = Operator(control_plane, kubeconfig=kubeconfig).start()
    apply_as_researcher(control_plane, restricted, write(control_plane, small_experiment(
        restricted, seeds=[1, 2], maxConcurrentJobs=4)))
    driver = PodDriver(control_plane, pod_simulator, restricted)
    try:
        for _ in range(4):
            deadline = time.time() + rng.uniform(1.0, 4.0)
            while time.time() < deadline:
                driver.step()
                time.sleep(0.2)
            op.kill()  # SIGKILL: mid-reconcile, between the records, the children and the status
            driver.step()
            op = Operator(control_plane, kubeconfig=kubeconfig).start()
        driver.run_until(phase_is(control_plane, restricted, "Succeeded"), timeout=300)
    finally:
        op.stop()
    per_job = {}
    for child in driver.jobs():
        key = child["metadata"]["labels"]["stilts.dev/job-hash"]
        per_job.setdefault(key, set()).add(child["metadata"]["labels"]["stilts.dev/attempt"])
    assert all(attempts == {"1"} for attempts in per_job.values()), "one child per job, never a duplicate attempt"
    seen = cluster.load(control_plane.api_client(), restricted, "exp")
    assert {j.hash for j in seen.jobs if j.phase == "evaluate"} <= set(seen.results), "every result kept"


def test_an_experiment_deleted_while_the_operator_is_down_goes_at_once(control_plane, chart, pod_simulator,
                                                                       restricted):
    kubeconfig = operator_kubeconfig(control_plane, chart["serviceAccount"])
    op = Operator(control_plane, kubeconfig=kubeconfig).start()
    apply_as_researcher(control_plane, restricted, write(control_plane, small_experiment(restricted)))
    driver = PodDriver(control_plane, pod_simulator, restricted)
    driver.run_until(lambda: len(driver.jobs()) >= 1, timeout=120)
    op.kill()
    custom = client.CustomObjectsApi(control_plane.api_client())
    assert not get(control_plane, restricted)["metadata"].get("finalizers"), "stilts puts no finalizer"
    custom.delete_namespaced_custom_object(GROUP, VERSION, restricted, PLURAL, "exp")
    started = time.time()

    def gone():
        try:
            get(control_plane, restricted)
            return False
        except ApiException as err:
            return err.status == 404
    wait_until(gone, 10, "the experiment to go while the operator is down")
    assert time.time() - started < 10
    wait_until(lambda: not driver.jobs(), 120, "its children garbage-collected")


def test_the_admins_policy_refuses_an_experiment_outside_it_and_runs_one_inside(control_plane, chart, pod_simulator,
                                                                                restricted):
    """The chart's `policy` values, as the operator reads them: an image outside the allowed prefixes
    gets a PolicyViolation naming the field and no child; an experiment within the policy still runs."""
    allowed = chart["env"]["STILTS_TRAINER_IMAGE"].rsplit("/", 1)[0] + "/"
    policy = json.dumps({"allowedImagePrefixes": [allowed], "allowedStorageClasses": ["(the cluster default)"]})
    op = Operator(control_plane, kubeconfig=operator_kubeconfig(control_plane, chart["serviceAccount"]),
                  env={"STILTS_TRAINER_IMAGE": chart["env"]["STILTS_TRAINER_IMAGE"], "STILTS_POLICY": policy}).start()
    try:
        outside = small_experiment(restricted, name="outside", image="docker.io/someone/miner:latest")
        apply_as_researcher(control_plane, restricted, write(control_plane, outside))
        apply_as_researcher(control_plane, restricted, write(control_plane, small_experiment(restricted, name="inside")))
        driver = PodDriver(control_plane, pod_simulator, restricted)
        driver.run_until(phase_is(control_plane, restricted, "Succeeded", name="inside"), timeout=300)
        status = get(control_plane, restricted, "outside")["status"]
        assert status["phase"] == "Failed", status
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "PolicyViolation", ready
        assert "spec.image: 'docker.io/someone/miner:latest' is not under an allowed prefix" in ready["message"]
        children = [j for j in driver.jobs() if j["metadata"]["labels"].get("stilts.dev/experiment") == "outside"]
        assert children == [], "a refused experiment gets no job"
        reasons = [e.reason for e in client.CoreV1Api(control_plane.api_client()).list_namespaced_event(
            restricted, field_selector="involvedObject.name=outside").items]
        assert "PolicyViolation" in reasons
    finally:
        op.stop()
