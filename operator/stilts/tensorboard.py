"""`stilts tensorboard`: every training job's curves (the trainer writes them to <job>/tensorboard/),
one run per job, named as `stilts status` names it.

Locally it starts TensorBoard on the run directory. On a cluster it starts a pod that mounts the
experiment's claim read-only (the trainer image carries TensorBoard; restricted, no service-account
token, owned by the experiment so that it goes with it) and forwards a local port to it.
"""

from __future__ import annotations

import time

from stilts_contract.names import EVENTS_DIR, TRAINING_PHASES

PORT = 6006


def logdir_spec(jobs: list[tuple[str, str, str]]) -> str:
    """TensorBoard's --logdir_spec (name:path,...) from (name, phase, job directory) of every job."""
    runs = [f"{name}:{directory.rstrip('/')}/{EVENTS_DIR}" for name, phase, directory in jobs
            if phase in TRAINING_PHASES]
    if not runs:
        raise LookupError("no training jobs, so no curves")
    return ",".join(runs)


def command(spec: str, port: int, host: str) -> list[str]:
    return ["tensorboard", "--logdir_spec", spec, "--port", str(port), "--host", host, "--reload_interval", "30"]


def pod_name(experiment: str) -> str:
    return f"stilts-tensorboard-{experiment}"[:63].rstrip("-")


def pod(seen, image: str) -> dict:
    """The pod that serves an experiment's curves from its volume."""
    from . import manifests

    experiment = seen.experiment
    jobs = [(j.name, j.phase, manifests.job_paths(experiment, j)[0]) for j in seen.jobs]
    container = {"name": "tensorboard", "image": image, "command": command(logdir_spec(jobs), PORT, "0.0.0.0"),
                 "ports": [{"name": "http", "containerPort": PORT}],
                 "securityContext": manifests.RESTRICTED_CONTAINER,
                 "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
                 "volumeMounts": [{"name": "workspace", "mountPath": manifests.WORKSPACE, "readOnly": True}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name(experiment["metadata"]["name"]),
                         "namespace": experiment["metadata"]["namespace"],
                         "labels": {**manifests.experiment_labels(experiment), "app.kubernetes.io/name": "tensorboard"},
                         "ownerReferences": [{**manifests.owner_reference(experiment), "controller": False}]},
            "spec": {"restartPolicy": "Always", "automountServiceAccountToken": False,
                     "securityContext": manifests.RESTRICTED_POD, "containers": [container],
                     "volumes": [{"name": "workspace", "persistentVolumeClaim": {
                         "claimName": manifests.claim_name(experiment), "readOnly": True}}]}}


def ensure_pod(api, seen, image: str) -> str:
    """Create the experiment's TensorBoard pod, or replace one that serves an older plan."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    body = pod(seen, image)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    try:
        current = core.read_namespaced_pod(name, namespace)
        if current.spec.containers[0].command == body["spec"]["containers"][0]["command"]:
            return name
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except client.ApiException as err:
        if err.status != 404:
            raise
    for _ in range(60):  # a replaced pod's name is free once it is gone
        try:
            core.create_namespaced_pod(namespace, body)
            return name
        except client.ApiException as err:
            if err.status != 409:
                raise
            time.sleep(1)
    raise TimeoutError(f"pod {namespace}/{name} is still being deleted")
