"""Kubeflow Training Operator v1: PyTorchJob `kubeflow.org/v1`, a Master and (workers - 1) Workers.

torchrun takes nodes, node rank, rendezvous address and processes per node from the PET_* variables
the training operator sets. Retries are ours, counted in the experiment's records. No backoffLimit
is set: past it, the training operator deletes the job's pods before marking it failed, and the
leader's termination message (the trainer's reason) would go with them; without it, a failed replica
fails the job and cleanPodPolicy None keeps the pods until stilts deletes the job.
"""

from __future__ import annotations

from . import Backend, from_conditions
from ..reconcile import Observed

LEADER_LABEL = ("training.kubeflow.org/replica-type", "master")


def manifest(experiment: dict, job, attempt: int, name: str, template: dict, metadata: dict) -> dict:
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if job.launch.workers > 1:
        replicas["Worker"] = {"replicas": job.launch.workers - 1, "restartPolicy": "Never", "template": template}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": metadata,
            "spec": {"runPolicy": {"cleanPodPolicy": "None",
                                   # Kueue admits a suspended job by resuming it; stilts never suspends one.
                                   "suspend": bool(metadata["labels"].get("kueue.x-k8s.io/queue-name"))},
                     "nprocPerNode": str(job.launch.processes),
                     "pytorchReplicaSpecs": replicas}}


def observe(child: dict, pods: list[dict]) -> Observed:
    replicas = (child.get("spec") or {}).get("pytorchReplicaSpecs", {}).values()
    return from_conditions(BACKEND, child, pods, "Succeeded", sum(r.get("replicas", 1) for r in replicas))


def is_leader(pod: dict) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(LEADER_LABEL[0]) == LEADER_LABEL[1]


def replica(pod: dict) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return f"{labels.get('training.kubeflow.org/replica-type', '')}/{labels.get('training.kubeflow.org/replica-index', '')}"


BACKEND = Backend(
    name="pytorchjob", group="kubeflow.org", version="v1", plural="pytorchjobs", kind="PyTorchJob",
    container="pytorch",
    max_name=52,  # the training operator names Services <job>-worker-<i>: DNS-1035 labels of at most 63
    manifest=manifest, observe=observe, is_leader=is_leader, replica=replica)
