"""What an experiment on a cluster looks like from outside the operator: its object, its plan
(recomputed from the spec), its job records and its results (the two ConfigMaps the operator keeps).
`stilts status`, `stilts report tx/NAME`, `stilts logs` and `stilts retry` read it; so do the tests."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from stilts_contract.names import TRAIN_LOG

from . import answer, backends, manifests
from .policy import DEFAULT_TRAINER_IMAGE
from .plan import Job, plan
from .spec import GROUP, PLURAL, VERSION, ExperimentSpec, parse_spec


@dataclass
class ClusterExperiment:
    experiment: dict
    spec: ExperimentSpec
    jobs: list[Job]
    records: dict
    results: dict
    looks: list = field(default_factory=list)   # the sequential design's looks (answer.py)
    items: dict = field(default_factory=dict)   # job hash -> per-item results the operator brought home

    @property
    def costs(self) -> list[dict]:
        return answer.job_costs(self.jobs, self.records)

    @property
    def name(self) -> str:
        return self.experiment["metadata"]["name"]


def api_client(kubeconfig: str | None = None, context: str | None = None):
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
    except config.ConfigException:
        config.load_incluster_config()
    return client.ApiClient()


def load(api, namespace: str, name: str, backend: str = "pytorchjob") -> ClusterExperiment:
    from kubernetes import client

    experiment = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    spec = parse_spec(experiment["spec"], f"{namespace}/{name}")
    status = experiment.get("status") or {}
    stem = manifests.prefix(experiment, backends.get(backend).max_name)
    jobs_store, results_store = manifests.store_names(stem)
    core = client.CoreV1Api(api)
    data = {}
    for key, store in (("jobs", status.get("jobsConfigMap") or jobs_store),
                       ("results", status.get("resultsConfigMap") or results_store)):
        try:
            data[key] = core.read_namespaced_config_map(store, namespace).data or {}
        except client.ApiException as err:
            if err.status != 404:
                raise
            data[key] = {}
    records = json.loads(data["jobs"].get("records", "{}"))
    results = {h: json.loads(v) for h, v in data["results"].items()}
    saved = json.loads(data["jobs"].get("answer", "{}"))
    design = answer.Design.of(spec)
    looks = saved.get("looks", []) if design and saved.get("design") == asdict(design) else []
    selector = f"{manifests.LABEL_UID}={experiment['metadata']['uid']},{manifests.LABEL_STORE}=items"
    items = {h: json.loads(v) for cm in core.list_namespaced_config_map(namespace, label_selector=selector).items
             for h, v in (cm.data or {}).items()}
    return ClusterExperiment(experiment, spec, plan(spec, looks), records, results, looks, items)


def retry(api, namespace: str, name: str) -> str:
    """Re-arm the experiment's failed jobs (and those they blocked); finished jobs are kept."""
    from kubernetes import client

    token = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": {manifests.RETRY_ANNOTATION: token}}})
    return token


def current_namespace(kubeconfig: str | None = None) -> str:
    """The namespace of the kubeconfig's current context (as kubectl uses it), or default."""
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
        return (context or {}).get("context", {}).get("namespace") or "default"
    except (config.ConfigException, FileNotFoundError):
        return "default"


def find_job(seen: ClusterExperiment, wanted: str) -> Job:
    """A job by its name (dense-qqp-s1-target) or a prefix of its hash."""
    matches = [j for j in seen.jobs if j.name == wanted or j.hash.startswith(wanted)]
    if len(matches) != 1:
        names = ", ".join(j.name for j in seen.jobs[:8])
        raise LookupError(f"{wanted!r} is {'ambiguous' if matches else 'not a job of'} {seen.name} "
                          f"(jobs: {names}, ...; see `stilts status tx/{seen.name}`)")
    return matches[0]


def leader_pod(api, seen: ClusterExperiment, job: Job, backend: str = "pytorchjob") -> dict | None:
    """The live rank-0 pod of the job's current attempt, if there is one."""
    from kubernetes import client

    attempt = seen.records.get(job.hash, {}).get("attempts", 0)
    selector = (f"{manifests.LABEL_UID}={seen.experiment['metadata']['uid']},{manifests.LABEL_HASH}={job.hash},"
                f"{manifests.LABEL_ATTEMPT}={attempt}")
    pods = client.CoreV1Api(api).list_namespaced_pod(seen.experiment["metadata"]["namespace"], label_selector=selector,
                                                     _preload_content=False)
    leader = backends.get(backend).is_leader
    return next((p for p in json.loads(pods.data)["items"] if leader(p)), None)


def read_from_volume(api, seen: ClusterExperiment, path: str, timeout: float = 300) -> str:
    """A file of the experiment's volume, read by a short-lived pod that mounts the claim read-only
    (the trainer image, restricted, no service-account token). The pod is deleted afterwards."""
    import uuid

    from kubernetes import client

    core = client.CoreV1Api(api)
    namespace = seen.experiment["metadata"]["namespace"]
    name = f"stilts-read-{uuid.uuid4().hex[:8]}"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": manifests.MANAGED_BY},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "securityContext": manifests.RESTRICTED_POD,
                    "containers": [{"name": "read", "image": seen.spec.image or DEFAULT_TRAINER_IMAGE, "command": ["cat", path],
                                    "securityContext": manifests.RESTRICTED_CONTAINER,
                                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                                  "limits": {"memory": "64Mi"}},
                                    "volumeMounts": [{"name": "workspace", "mountPath": manifests.WORKSPACE,
                                                      "readOnly": True}]}],
                    "volumes": [{"name": "workspace", "persistentVolumeClaim": {
                        "claimName": manifests.claim_name(seen.experiment), "readOnly": True}}]}}
    core.create_namespaced_pod(namespace, pod)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            phase = core.read_namespaced_pod(name, namespace).status.phase
            if phase in ("Succeeded", "Failed"):
                text = core.read_namespaced_pod_log(name, namespace)
                if phase == "Failed":
                    raise FileNotFoundError(f"{path} could not be read from the volume: {text.strip()[-300:]}")
                return text
            time.sleep(1)
        raise TimeoutError(f"the pod reading {path} from the volume did not finish in {timeout:.0f}s")
    finally:
        core.delete_namespaced_pod(name, namespace)


def job_log(api, seen: ClusterExperiment, job: Job, follow: bool = False, backend: str = "pytorchjob"):
    """The job's log, as lines: the live leader pod's (followed with `follow`), else every attempt's log
    kept on the volume (the trainer appends it to <job directory>/train.log)."""
    from kubernetes import client

    pod = leader_pod(api, seen, job, backend)
    if pod is not None:
        response = client.CoreV1Api(api).read_namespaced_pod_log(
            pod["metadata"]["name"], pod["metadata"]["namespace"], container=backends.get(backend).container,
            follow=follow, _preload_content=False)
        for line in response.stream():
            yield line.decode(errors="replace")
        return
    out, _ = manifests.job_paths(seen.experiment, job)
    yield read_from_volume(api, seen, f"{out}/{TRAIN_LOG}")
