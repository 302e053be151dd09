"""`stilts tensorboard`: every training job's curves (the trainer writes them to <job>/tensorboard/),
one run per job, named as `stilts status` names it.

Locally it starts TensorBoard on the run directory. On a cluster it starts a pod that mounts the
experiment's claim read-only (the trainer image carries TensorBoard; restricted, no service-account
token, owned by the experiment so that it goes with it), waits until it runs (the first start pulls the
trainer image) and forwards a local port to it. TensorBoard listens on 127.0.0.1 in the pod: it has no
authentication, so nothing else in the cluster reaches it; `kubectl port-forward` connects from inside
the pod's network namespace, where 127.0.0.1 is the pod's own. Only a pod that the experiment owns (its
owner reference names the experiment's uid) is ever replaced or deleted.
"""

from __future__ import annotations

import hashlib
import json
import time

from stilts_contract.names import EVENTS_DIR, TRAINING_PHASES

PORT = 6006
HOST = "127.0.0.1"  # in the pod: reached through port-forward only
MAX_NAME = 63


class NotOwned(RuntimeError):
    """A pod of the TensorBoard pod's name exists and is not this experiment's: stilts leaves it alone."""


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
    """stilts-tensorboard-<experiment>; a name too long for that ends in a digest of the whole name, so that
    two experiments whose names share a prefix get two pods."""
    name = f"stilts-tensorboard-{experiment}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(experiment.encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def pod(seen, image: str) -> dict:
    """The pod that serves an experiment's curves from its volume."""
    from . import manifests

    experiment = seen.experiment
    jobs = [(j.name, j.phase, manifests.job_paths(experiment, j)[0]) for j in seen.jobs]
    container = {"name": "tensorboard", "image": image, "command": command(logdir_spec(jobs), PORT, HOST),
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


def owned_by(current: dict, uid: str) -> bool:
    """Whether a pod (as the API returns it) names the experiment of this uid among its owners."""
    return any(ref.get("uid") == uid for ref in (current.get("metadata") or {}).get("ownerReferences") or [])


def owner_text(current: dict) -> str:
    refs = (current.get("metadata") or {}).get("ownerReferences") or []
    return ", ".join(f"{r.get('kind')}/{r.get('name')} uid {r.get('uid')}" for r in refs) or "no owner"


def serves_the_same(current: dict, body: dict) -> bool:
    """Whether a running pod already serves what `body` would (same image and command)."""
    have = ((current.get("spec") or {}).get("containers") or [{}])[0]
    want = body["spec"]["containers"][0]
    return (have.get("image"), have.get("command")) == (want["image"], want["command"])


def state(current: dict) -> tuple[str, str]:
    """("Running", "") once the pod's TensorBoard runs; otherwise ("Waiting", why) with the reason Kubernetes
    gives (ContainerCreating, ImagePullBackOff, Unschedulable, ...), or ("Ended", why) for a pod that ended."""
    status = current.get("status") or {}
    phase = status.get("phase") or "Pending"
    containers = status.get("containerStatuses") or []
    if phase == "Running" and containers and (containers[0].get("state") or {}).get("running") is not None:
        return "Running", ""
    if phase in ("Succeeded", "Failed"):
        return "Ended", f"{phase}{': ' + status['reason'] if status.get('reason') else ''}"
    for c in containers:
        st = c.get("state") or {}
        detail = st.get("waiting") or st.get("terminated")
        if detail:
            reason = detail.get("reason") or ("Terminated" if "terminated" in st else "Waiting")
            message = (detail.get("message") or "").strip().splitlines()
            return "Waiting", reason + (f" ({message[0][:200]})" if message else "")
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("reason"):
            message = (condition.get("message") or "").strip().splitlines()
            return "Waiting", condition["reason"] + (f" ({message[0][:200]})" if message else "")
    return "Waiting", phase


def _read(core, name: str, namespace: str) -> dict | None:
    from kubernetes import client

    try:
        return json.loads(core.read_namespaced_pod(name, namespace, _preload_content=False).data)
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


def _delete(core, current: dict) -> None:
    """Delete exactly this pod (its uid as a precondition: not a pod of the same name made meanwhile)."""
    from kubernetes import client

    meta = current["metadata"]
    try:
        core.delete_namespaced_pod(meta["name"], meta["namespace"], body=client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])))
    except client.ApiException as err:
        if err.status not in (404, 409):  # gone, or another pod by now (its uid differs): left alone
            raise


def _refuse(current: dict, seen) -> NotOwned:
    meta = current["metadata"]
    return NotOwned(f"pod {meta['namespace']}/{meta['name']} exists and is not {seen.name}'s "
                    f"(owner: {owner_text(current)}); stilts leaves it alone: delete it yourself if it is a leftover")


def ensure_pod(api, seen, image: str) -> str:
    """Create the experiment's TensorBoard pod, or replace one of its own that serves an older plan; a pod of
    that name that the experiment does not own is never touched (NotOwned)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    body = pod(seen, image)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    uid = seen.experiment["metadata"]["uid"]
    for _ in range(60):  # a replaced pod's name is free once it is gone
        current = _read(core, name, namespace)
        if current is None:
            try:
                core.create_namespaced_pod(namespace, body)
                return name
            except client.ApiException as err:
                if err.status != 409:
                    raise
                continue  # made meanwhile: look at it
        if not owned_by(current, uid):
            raise _refuse(current, seen)
        if not current["metadata"].get("deletionTimestamp"):
            if serves_the_same(current, body):
                return name
            _delete(core, current)
        time.sleep(1)
    raise TimeoutError(f"pod {namespace}/{name} is still being deleted")


def delete_pod(api, seen) -> str | None:
    """`--stop`: delete the experiment's TensorBoard pod; its name, or None when there was none."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    name, namespace = pod_name(seen.name), seen.experiment["metadata"]["namespace"]
    current = _read(core, name, namespace)
    if current is None:
        return None
    if not owned_by(current, seen.experiment["metadata"]["uid"]):
        raise _refuse(current, seen)
    _delete(core, current)
    return name


def wait_running(api, namespace: str, name: str, timeout: float, say=print, poll: float = 2.0) -> None:
    """Until the pod's TensorBoard runs; each new reason it waits for is said once. TimeoutError names the last."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    deadline = time.time() + timeout
    last = None
    while True:
        current = _read(core, name, namespace)
        kind, why = state(current) if current else ("Waiting", "the pod is gone")
        if kind == "Running":
            return
        if kind == "Ended":
            raise RuntimeError(f"pod {namespace}/{name} ended ({why}); `kubectl logs -n {namespace} {name}` says why")
        if why != last:
            say(f"waiting for pod {namespace}/{name}: {why}")
            last = why
        if time.time() >= deadline:
            raise TimeoutError(f"pod {namespace}/{name} is not running after {timeout:.0f} s: {why} "
                               f"(`kubectl describe pod -n {namespace} {name}` has the events)")
        time.sleep(poll)
