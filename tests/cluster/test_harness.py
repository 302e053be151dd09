"""The harness proves itself on what matters: the API server enforces our CRD, and a PyTorchJob gets
pods from the real training operator, which the simulator drives to Succeeded."""

import copy

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stilts.spec import GROUP, PLURAL, VERSION
from tests.conftest import REPO

from .harness import wait_until

pytestmark = pytest.mark.cluster
DEMO = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())


def create_experiment(plane, namespace, doc):
    api = client.CustomObjectsApi(plane.api_client())
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)


def test_valid_experiments_are_accepted_and_defaulted(control_plane, namespace):
    for path in (REPO / "examples").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        created = create_experiment(control_plane, namespace, doc)
        assert created["spec"]["backbones"][0]["name"]
    created = client.CustomObjectsApi(control_plane.api_client()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "demo")
    # Defaults from the schema: fields the file leaves out come back filled in.
    assert created["spec"]["storage"]["retainOnDelete"] is True
    assert created["spec"]["training"]["target"]["adamEpsilon"] if "adamEpsilon" in created["spec"]["training"]["target"] else True
    assert "earlyStoppingPatience" not in DEMO["spec"]["training"]["intermediate"]
    assert created["spec"]["training"]["intermediate"]["earlyStoppingPatience"] == 30
    assert created["spec"]["training"]["intermediate"]["evalEverySteps"] == 80  # and what it sets is kept
    assert created["spec"]["retries"]["limit"] == 2


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(seeds=[1, 1]), "seeds must be unique"),
    (lambda s: s["backbones"].append(dict(s["backbones"][0])), "names must be unique"),
    (lambda s: s["backbones"][0].update(moe={"experts": 4}), "only for architecture: moe"),
    (lambda s: s["backbones"][0].update(architecture="moe", gpusPerWorker=2, moe={"experts": 8, "expertParallelSize": 4}),
     "divide the job's world size"),
    (lambda s: s.update(maxConcurrentJobs=0), "spec.maxConcurrentJobs"),
    (lambda s: s["target"].update(languages=["en", "xx"]), "spec.target.languages[1]"),
    (lambda s: s.update(dataSource="hub", backbones=[{"name": "x", "model": "FacebookAI/xlm-roberta-base"}],
                        intermediateTasks=["sst2", "ccg"]), "spec.dataDir: ccg and multitask read CCGbank"),
    # The shipped paper example before it was fixed: 2 pods x 8 GPUs x 4 per micro-batch = 64 > 32.
    (lambda s: s.update(dataSource="hub", backbones=[{"name": "x", "model": "FacebookAI/xlm-roberta-large",
                                                      "workers": 2, "gpusPerWorker": 8}],
                        training={"target": {"batchSize": 32, "microBatchSize": 4}}),
     "spec.training.target.batchSize must be a multiple of microBatchSize"),
])
def test_bad_experiments_are_refused_with_the_crds_message(control_plane, namespace, change, message):
    doc = copy.deepcopy(DEMO)
    doc["metadata"]["name"] = "bad"
    change(doc["spec"])
    with pytest.raises(ApiException) as info:
        create_experiment(control_plane, namespace, doc)
    assert info.value.status == 422
    assert message in info.value.body, info.value.body


def test_an_experiment_name_too_long_for_its_labels_is_refused(control_plane, namespace):
    doc = copy.deepcopy(DEMO)
    doc["metadata"]["name"] = "x" * 41
    with pytest.raises(ApiException) as info:
        create_experiment(control_plane, namespace, doc)
    assert info.value.status == 422 and "metadata.name: at most 40 characters" in info.value.body


def test_status_subresource_and_rbac(control_plane, namespace):
    from stilts.plan import plan
    from stilts.spec import parse_spec
    from stilts.status import summarize
    api = client.CustomObjectsApi(control_plane.api_client())
    doc = copy.deepcopy(DEMO)
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    jobs = plan(parse_spec(doc["spec"]))
    records = {j.hash: {"state": s, "attempts": 1, "since": 1e9, "reason": "Unschedulable", "message": "no GPU"}
               for j, s in zip(jobs, ["Failed", "Starting", "Queued", "Running", "Succeeded"] * 10)}
    status = summarize(jobs, records, {}, 1, 1e9) | {"jobsConfigMap": "a", "resultsConfigMap": "b"}
    patched = api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "demo",
                                                        {"status": {**status, "unknown": 1}})
    assert patched["status"] == status, "every status field the operator writes survives; unknown ones are pruned"
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]
    as_user = client.CustomObjectsApi(control_plane.api_client("alice"))
    with pytest.raises(ApiException) as info:
        as_user.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert info.value.status == 403


def test_pytorchjob_gets_pods_and_the_simulator_drives_it_to_succeeded(control_plane, training_operator,
                                                                       pod_simulator, namespace):
    api = client.CustomObjectsApi(control_plane.api_client())
    container = {"name": "pytorch", "image": "stilts-trainer:test", "command": ["python", "-m", "stilts_trainer"]}
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "pj"},
           "spec": {"pytorchReplicaSpecs": {
               "Master": {"replicas": 1, "restartPolicy": "Never", "template": {"spec": {"containers": [container]}}},
               "Worker": {"replicas": 1, "restartPolicy": "Never", "template": {"spec": {"containers": [container]}}}}}}
    api.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", job)
    selector = "training.kubeflow.org/job-name=pj"
    pods = wait_until(lambda: (p := pod_simulator.pods(namespace, selector)) and len(p) == 2 and p, 60,
                      "the training operator to create 2 pods", training_operator.process)
    assert sorted(p["metadata"]["name"] for p in pods) == ["pj-master-0", "pj-worker-0"]
    master = next(p for p in pods if p["metadata"]["name"].endswith("master-0"))
    env = {e["name"]: e.get("value") for e in master["spec"]["containers"][0].get("env") or []}
    assert env.get("WORLD_SIZE") == "2" and env.get("RANK") == "0", env
    for pod in pods:
        pod_simulator.run(pod)

    def condition(kind):
        obj = api.get_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", "pj")
        return any(c["type"] == kind and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))
    wait_until(lambda: condition("Running"), 60, "PyTorchJob Running", training_operator.process)
    for pod in pods:
        pod_simulator.finish(pod, 0, '{"phase":"evaluate"}')
    wait_until(lambda: condition("Succeeded"), 60, "PyTorchJob Succeeded", training_operator.process)
    master = client.CoreV1Api(control_plane.api_client()).read_namespaced_pod("pj-master-0", namespace)
    assert master.status.container_statuses[0].state.terminated.message == '{"phase":"evaluate"}'


def test_trainjob_becomes_a_jobset_jobs_and_pods_and_the_simulator_drives_it_to_complete(
        control_plane, trainer_v2, pod_simulator, namespace):
    """Trainer v2's chain with the chart's runtime: TrainJob -> JobSet -> Indexed Job -> 2 pods with
    torchrun's PET_* environment; their success completes the TrainJob."""
    from tests.cluster.test_operator import install_trainjob_runtime
    install_trainjob_runtime(control_plane)
    api = client.CustomObjectsApi(control_plane.api_client())
    job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "tj"},
           "spec": {"runtimeRef": {"name": "stilts-torch-distributed", "kind": "ClusterTrainingRuntime",
                                   "apiGroup": "trainer.kubeflow.org"},
                    "trainer": {"image": "stilts-trainer:test", "command": ["python", "-m", "stilts_trainer"],
                                "numNodes": 2, "numProcPerNode": 1}}}
    api.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", namespace, "trainjobs", job)
    selector = "jobset.sigs.k8s.io/jobset-name=tj"
    pods = wait_until(lambda: (p := pod_simulator.pods(namespace, selector)) and len(p) == 2 and p, 60,
                      "Trainer, JobSet and the job controller to create 2 pods")
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0].get("env") or []}
    assert env.get("PET_NNODES") == "2" and env.get("PET_NPROC_PER_NODE") == "1", env
    from stilts.backends import trainjob
    assert sum(trainjob.is_leader(p) for p in pods) == 1, "rank 0 is found by JobSet's labels"
    for pod in pods:
        pod_simulator.run(pod)
    for pod in pods:
        pod_simulator.finish(pod, 0, '{"phase":"evaluate"}')

    def complete():
        obj = api.get_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", namespace, "trainjobs", "tj")
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in (obj.get("status") or {}).get("conditions", []))
    wait_until(complete, 60, "TrainJob Complete")


def test_owner_references_garbage_collect_children(control_plane, namespace):
    api = client.CustomObjectsApi(control_plane.api_client())
    core = client.CoreV1Api(control_plane.api_client())
    owner = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, copy.deepcopy(DEMO))
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TransferExperiment", "name": "demo",
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "demo")

    def gone():
        try:
            core.read_namespaced_config_map("child", namespace)
            return False
        except ApiException as err:
            return err.status == 404
    wait_until(gone, 120, "the garbage collector to delete the child")
