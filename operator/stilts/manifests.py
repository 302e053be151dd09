"""Kubernetes objects for one planned job, as pure functions of plain dicts; the same for every job
backend (backends/ wraps the pod template in its own kind).

Per job attempt: a ConfigMap holding its job.json, and a child (PyTorchJob or TrainJob) whose pods
run `python -m stilts_trainer.launch -m stilts_trainer --job /etc/stilts/job.json` (torchrun, keeping
the trainer's exit codes). Per experiment: the claim (unless one is
named), and two ConfigMaps that hold what does not fit an object's status at paper scale: the
records of every job, and the results.
"""

from __future__ import annotations

import hashlib
import json
import re

from stilts_contract.names import TRAIN_LOG, shutdown_timeout
from stilts_contract.tracking import CREDENTIAL_VARIABLES

from .plan import Job, job_json
from .spec import API_VERSION, KIND, ExperimentSpec

# torchrun that keeps the trainer's exit codes (bad input, preempted): trainer/stilts_trainer/launch.py
LAUNCHER = ("python", "-m", "stilts_trainer.launch")
WORKSPACE = "/workspace"
JOB_DIR = "/etc/stilts"
TRAINER_METRICS_PORT = 9400
LABEL_EXPERIMENT = "stilts.dev/experiment"
LABEL_UID = "stilts.dev/experiment-uid"
LABEL_HASH = "stilts.dev/job-hash"
LABEL_ATTEMPT = "stilts.dev/attempt"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_STORE = "stilts.dev/store"  # what an experiment's ConfigMap holds (items: per-item results)
RETRY_ANNOTATION = "stilts.dev/retry"  # `stilts retry` sets it: failed jobs are re-armed once per value
MANAGED_BY = {"app.kubernetes.io/managed-by": "stilts"}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                  "seccompProfile": {"type": "RuntimeDefault"}}
def prefix(experiment: dict, max_name: int) -> str:
    """The stem every child of this experiment is named from: readable, and unique to this object (a
    digest of namespace, name and uid), so two experiments never share a child name."""
    meta = experiment["metadata"]
    digest = hashlib.sha256(f"{meta.get('namespace', 'default')}/{meta['name']}/{meta['uid']}".encode()).hexdigest()
    stem = re.sub(r"[^a-z0-9-]", "-", meta["name"].lower())
    room = max_name - len("tx--") - 6 - len("-0123456789-100")  # digest, job hash, attempt
    return f"tx-{stem[:room].rstrip('-')}-{digest[:6]}"


def child_name(stem: str, job_hash: str, attempt: int) -> str:
    """Deterministic per attempt: a restarted operator finds (or re-creates, getting 409) the same name."""
    return f"{stem}-{job_hash[:10]}-{attempt}"


def claim_name(experiment: dict) -> str:
    storage = experiment["spec"].get("storage", {})
    return storage.get("claimName") or f"{experiment['metadata']['name']}-checkpoints"[:253]


def owner_reference(experiment: dict) -> dict:
    meta = experiment["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def experiment_labels(experiment: dict) -> dict:
    meta = experiment["metadata"]
    return {LABEL_EXPERIMENT: meta["name"], LABEL_UID: meta["uid"], **MANAGED_BY}


def labels(experiment: dict, job: Job, attempt: int) -> dict:
    out = {**experiment_labels(experiment), LABEL_HASH: job.hash, LABEL_ATTEMPT: str(attempt),
           "stilts.dev/backbone": job.backbone, "stilts.dev/phase": job.phase,
           "stilts.dev/task": job.intermediate_task or "none",
           "stilts.dev/seed": "" if job.seed is None else str(job.seed)}
    queue = experiment["spec"].get("scheduling", {}).get("queueName")
    if queue:
        out[LABEL_QUEUE] = queue
    return out


def metadata(experiment: dict, name: str, job: Job, attempt: int) -> dict:
    return {"name": name, "namespace": experiment["metadata"].get("namespace", "default"),
            "labels": labels(experiment, job, attempt),
            "annotations": {"stilts.dev/job": job.name, "stilts.dev/attempt": str(attempt)},
            "ownerReferences": [owner_reference(experiment)]}


def job_paths(experiment: dict, job: Job) -> tuple[str, str | None]:
    name = experiment["metadata"]["name"]
    out = f"{WORKSPACE}/{name}/{job.hash}"
    parent = f"{WORKSPACE}/{name}/{job.parent}" if job.parent else None
    return out, parent


def tracking(experiment: dict) -> dict | None:
    """job.json's tracking block: the experiment's parent run is found by its uid (the trainer makes it
    when it first finds none), so the operator needs no credentials and never calls the server."""
    settings = (experiment["spec"].get("tracking") or {}).get("mlflow")
    if not settings:
        return None
    meta = experiment["metadata"]
    return {"uri": settings["uri"], "experimentName": settings.get("experimentName", "stilts"),
            "parentKey": f"{meta.get('namespace', 'default')}/{meta['name']}/{meta['uid']}"}


def tracking_env(spec: ExperimentSpec) -> list[dict]:
    """The tracking server's credentials, from the Secret the spec names: variables MLflow's client reads
    itself, each optional (a Secret may hold a token, or a user and password)."""
    settings = spec.tracking.mlflow if spec.tracking else None
    if not settings or not settings.credentials_secret:
        return []
    return [{"name": var, "valueFrom": {"secretKeyRef": {"name": settings.credentials_secret, "key": var,
                                                          "optional": True}}} for var in CREDENTIAL_VARIABLES]


def config_map(experiment: dict, job: Job, attempt: int, name: str) -> dict:
    out, parent = job_paths(experiment, job)
    body = job_json(job, out, parent, experiment=experiment["metadata"]["name"],
                    metrics_port=TRAINER_METRICS_PORT, cache_dir=f"{WORKSPACE}/.cache/huggingface",
                    tracking=tracking(experiment))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(experiment, name, job, attempt),
            "data": {"job.json": json.dumps(body, indent=2, sort_keys=True)}}


def resources(job: Job) -> dict:
    """Requests (and limits for memory and GPUs) of one trainer container, from the planned launch."""
    launch = job.launch
    out = {"requests": {"cpu": launch.cpu, "memory": launch.memory}, "limits": {"memory": launch.memory}}
    if launch.gpus:
        out["requests"]["nvidia.com/gpu"] = out["limits"]["nvidia.com/gpu"] = str(launch.gpus)
    return out


def pod_template(experiment: dict, spec: ExperimentSpec, job: Job, attempt: int, name: str, container_name: str,
                 default_image: str, env: list[dict] | None = None) -> dict:
    """The trainer pod every backend runs: restricted security, no service-account token, the shared
    volume, a bounded /dev/shm, the job's ConfigMap and the metrics port. `spec` is the experiment's
    typed spec (its defaults are written once, in spec.py)."""
    scheduling = spec.scheduling
    grace = scheduling.termination_grace_period_seconds
    variables = [{"name": "HF_HOME", "value": f"{WORKSPACE}/.cache/huggingface"},
                 {"name": "PYTHONUNBUFFERED", "value": "1"},
                 # Each attempt's log is kept on the volume (stilts logs reads it after the pod is gone).
                 {"name": "STILTS_LOG_FILE", "value": f"{job_paths(experiment, job)[0]}/{TRAIN_LOG}"},
                 {"name": "STILTS_ATTEMPT", "value": str(attempt)},
                 # torchrun waits this long for its workers after SIGTERM (they commit a checkpoint), then
                 # exits with their code, before the kubelet's SIGKILL at the end of the grace period.
                 {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(shutdown_timeout(grace))},
                 *(env or [])]
    if spec.hf_token_secret:
        variables.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": spec.hf_token_secret,
                                                                             "key": "HF_TOKEN"}}})
    variables += tracking_env(spec)
    container = {
        "name": container_name,  # the backend's: its controller finds the trainer container by name
        "image": spec.image or default_image,
        "command": [*LAUNCHER, "-m", "stilts_trainer", "--job", f"{JOB_DIR}/job.json"],
        "env": variables,
        "ports": [{"name": "metrics", "containerPort": TRAINER_METRICS_PORT}],
        "resources": resources(job),
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE},
                         {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "job", "mountPath": JOB_DIR, "readOnly": True}],
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = {
        "containers": [container],
        "terminationGracePeriodSeconds": grace,
        "securityContext": RESTRICTED_POD,
        "automountServiceAccountToken": False,  # trainers never call the API server
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name(experiment)}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": job.launch.shm}},
                    {"name": "job", "configMap": {"name": name}}],
        "nodeSelector": dict(scheduling.node_selector),
        "tolerations": [{k: v for k, v in t.model_dump(by_alias=True).items() if v not in ("", None)}
                        for t in scheduling.tolerations],
    }
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    return {"metadata": {"labels": labels(experiment, job, attempt)}, "spec": pod}


def claim(experiment: dict) -> dict:
    storage = experiment["spec"].get("storage", {})
    meta = {"name": claim_name(experiment), "namespace": experiment["metadata"].get("namespace", "default"),
            "labels": experiment_labels(experiment)}
    if not storage.get("retainOnDelete", True):
        meta["ownerReferences"] = [owner_reference(experiment)]
    spec = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": storage.get("size", "2Ti")}}}
    if storage.get("storageClassName"):
        spec["storageClassName"] = storage["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def store_names(stem: str) -> tuple[str, str]:
    """The experiment's two ConfigMaps: per-job records, and results."""
    return f"{stem}-jobs", f"{stem}-results"


ITEMS_STORES = 64


def items_store(stem: str, job_hash: str) -> str:
    """The ConfigMap holding an evaluate job's per-item results: one of 64, by the hash. A run's items
    take about 13 KB (XNLI: 15 x 5,010 bits), so the largest grid the CRD admits (1,536 evaluate jobs)
    fills the fullest to about 412 KiB, under a ConfigMap's 1 MiB (tests/operator/test_largest_grid.py)."""
    return f"{stem}-items-{int(job_hash[:2], 16) % ITEMS_STORES:02d}"


def store(experiment: dict, name: str, data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": experiment["metadata"].get("namespace", "default"),
                         "labels": experiment_labels(experiment), "ownerReferences": [owner_reference(experiment)]},
            "data": data}
