"""Kubernetes objects for one planned job, as pure functions of plain dicts.

Per job: a ConfigMap holding its job.json, and a Kubeflow PyTorchJob (Master + Workers) whose pods
run `torchrun -m stilts_trainer --job /etc/stilts/job.json`. torchrun takes nodes, node rank,
rendezvous address and processes per node from the PET_* variables the training operator sets.
"""

from __future__ import annotations

import json
import re

from .plan import Job, job_json
from .spec import API_VERSION, KIND

WORKSPACE = "/workspace"
JOB_DIR = "/etc/stilts"
TRAINER_METRICS_PORT = 9400
LABEL_EXPERIMENT = "stilts.dev/experiment"
LABEL_HASH = "stilts.dev/job-hash"
MAX_NAME = 52  # the training operator names Services <job>-worker-<i>: DNS-1035 labels of at most 63


def child_name(experiment: str, job_hash: str, attempt: int) -> str:
    """Deterministic per attempt: a restarted operator finds (or re-creates, getting 409) the same name."""
    stem = re.sub(r"[^a-z0-9-]", "-", experiment.lower())
    suffix = f"-{job_hash[:12]}-{attempt}"
    name = f"tx-{stem}"[: MAX_NAME - len(suffix)].rstrip("-") + suffix
    return name


def claim_name(experiment: dict) -> str:
    storage = experiment["spec"].get("storage", {})
    return storage.get("claimName") or f"{experiment['metadata']['name']}-checkpoints"[:253]


def owner_reference(experiment: dict) -> dict:
    meta = experiment["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def labels(experiment: dict, job: Job) -> dict:
    return {LABEL_EXPERIMENT: experiment["metadata"]["name"], LABEL_HASH: job.hash,
            "stilts.dev/backbone": job.backbone, "stilts.dev/phase": job.phase,
            "stilts.dev/task": job.intermediate_task or "none",
            "stilts.dev/seed": "" if job.seed is None else str(job.seed),
            "app.kubernetes.io/managed-by": "stilts"}


def job_paths(experiment: dict, job: Job) -> tuple[str, str | None]:
    name = experiment["metadata"]["name"]
    out = f"{WORKSPACE}/{name}/{job.hash}"
    parent = f"{WORKSPACE}/{name}/{job.parent}" if job.parent else None
    return out, parent


def config_map(experiment: dict, job: Job, attempt: int) -> dict:
    out, parent = job_paths(experiment, job)
    body = job_json(job, out, parent, experiment=experiment["metadata"]["name"],
                    metrics_port=TRAINER_METRICS_PORT, cache_dir=f"{WORKSPACE}/.cache/huggingface")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": child_name(experiment["metadata"]["name"], job.hash, attempt),
                         "namespace": experiment["metadata"].get("namespace", "default"),
                         "labels": labels(experiment, job), "ownerReferences": [owner_reference(experiment)]},
            "data": {"job.json": json.dumps(body, indent=2, sort_keys=True)}}


RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def _pod_template(experiment: dict, job: Job, attempt: int) -> dict:
    spec = experiment["spec"]
    name = child_name(experiment["metadata"]["name"], job.hash, attempt)
    gpus = job.processes_per_worker if _gpu_job(experiment, job) else 0
    env = [{"name": "HF_HOME", "value": f"{WORKSPACE}/.cache/huggingface"},
           {"name": "PYTHONUNBUFFERED", "value": "1"}]
    if spec.get("hfTokenSecret"):
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": spec["hfTokenSecret"],
                                                                        "key": "HF_TOKEN"}}})
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    container = {
        "name": "pytorch",  # the training operator finds the trainer container by this name
        "image": spec.get("image"),
        "command": ["torchrun", "-m", "stilts_trainer", "--job", f"{JOB_DIR}/job.json"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": TRAINER_METRICS_PORT}],
        "resources": resources,
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE},
                         {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "job", "mountPath": JOB_DIR, "readOnly": True}],
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    scheduling = spec.get("scheduling", {})
    pod = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name(experiment)}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                    {"name": "job", "configMap": {"name": name}}],
        "nodeSelector": scheduling.get("nodeSelector") or {},
        "tolerations": [{k: v for k, v in t.items() if v not in ("", None)}
                        for t in scheduling.get("tolerations") or []],
    }
    if scheduling.get("priorityClassName"):
        pod["priorityClassName"] = scheduling["priorityClassName"]
    return {"metadata": {"labels": labels(experiment, job)}, "spec": pod}


def _gpu_job(experiment: dict, job: Job) -> bool:
    backbone = next((b for b in experiment["spec"]["backbones"] if b["name"] == job.backbone), {})
    return backbone.get("gpusPerWorker", 8) > 0 and job.phase != "prefetch"


def pytorchjob(experiment: dict, job: Job, attempt: int) -> dict:
    template = _pod_template(experiment, job, attempt)
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if job.workers > 1:
        replicas["Worker"] = {"replicas": job.workers - 1, "restartPolicy": "Never", "template": template}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": child_name(experiment["metadata"]["name"], job.hash, attempt),
                     "namespace": experiment["metadata"].get("namespace", "default"),
                     "labels": labels(experiment, job),
                     "annotations": {"stilts.dev/job": job.name, "stilts.dev/attempt": str(attempt)},
                     "ownerReferences": [owner_reference(experiment)]},
        "spec": {
            # Retries are ours (counted in the experiment's status): the training operator's backoffLimit
            # does not count failures under restartPolicy: Never.
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
            "nprocPerNode": str(job.processes_per_worker),
            "pytorchReplicaSpecs": replicas,
        },
    }


def claim(experiment: dict) -> dict:
    storage = experiment["spec"].get("storage", {})
    meta = {"name": claim_name(experiment), "namespace": experiment["metadata"].get("namespace", "default"),
            "labels": {LABEL_EXPERIMENT: experiment["metadata"]["name"]}}
    if not storage.get("retainOnDelete", True):
        meta["ownerReferences"] = [owner_reference(experiment)]
    spec = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": storage.get("size", "2Ti")}}}
    if storage.get("storageClassName"):
        spec["storageClassName"] = storage["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}

