"""The kopf operator. Handlers are triggers; `reconcile_experiment` reads, decides (reconcile.py,
pure), acts with the fewest API calls, and writes status.

Triggers: the experiment's create/update/resume, every event of a PyTorchJob it owns, a timer as a
safety net (watch streams can go silent), and a one-shot timer for retry backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import manifests, metrics
from .plan import plan
from .reconcile import Observed, job_condition, reconcile
from .spec import GROUP, PLURAL, VERSION, SpecError, parse_spec

log = logging.getLogger("stilts.operator")
RESYNC_SECONDS = float(os.environ.get("STILTS_RESYNC_SECONDS", "30"))
_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
# Termination messages of master pods, by (namespace, PyTorchJob): the training operator deletes a
# failed pod, and with it the message that says why.
_messages: dict[tuple[str, str], str] = {}
_api: client.ApiClient | None = None


def api() -> client.ApiClient:
    global _api
    if _api is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _api = client.ApiClient()
    return _api


# -- handlers (triggers only) ------------------------------------------------------------------------

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Without these a watch can hang forever on a silent connection (kopf #585, #787).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.enabled = False  # we post our own events, with reasons users can filter on
    port = int(os.environ.get("STILTS_METRICS_PORT", "8080"))
    if port:
        metrics.serve(port)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_experiment(name, namespace, **_):
    reconcile_experiment(namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(name, namespace, **_):
    reconcile_experiment(namespace, name)


@kopf.on.event("kubeflow.org", "v1", "pytorchjobs", labels={manifests.LABEL_EXPERIMENT: kopf.PRESENT})
def on_child(labels, namespace, type, **_):
    reconcile_experiment(namespace, labels[manifests.LABEL_EXPERIMENT])


@kopf.on.event("", "v1", "pods", labels={manifests.LABEL_EXPERIMENT: kopf.PRESENT})
def on_pod(body, namespace, labels, **_):
    job = labels.get("training.kubeflow.org/job-name")
    if not job or not body["metadata"]["name"].endswith("-master-0"):
        return
    for status in (body.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if status.get("name") == "pytorch" and terminated and terminated.get("message"):
            _messages[(namespace, job)] = terminated["message"]


# -- the reconcile loop ------------------------------------------------------------------------------

def reconcile_experiment(namespace: str, name: str) -> None:
    with _locks[(namespace, name)]:  # one reconcile per experiment at a time (several triggers race)
        started = time.perf_counter()
        try:
            _reconcile(namespace, name)
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            log.exception("reconcile %s/%s failed", namespace, name)
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)


def _reconcile(namespace: str, name: str) -> None:
    custom = client.CustomObjectsApi(api())
    try:
        experiment = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as err:
        if err.status == 404:
            metrics.forget(name)
            return
        raise
    if experiment["metadata"].get("deletionTimestamp"):
        return
    try:
        spec = parse_spec(experiment["spec"], f"{namespace}/{name}")
    except SpecError as err:  # the CRD refuses most of this; what is left is reported, not retried
        _patch_status(custom, namespace, name, {"phase": "Failed", "conditions": [
            {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": str(err)}]})
        return
    jobs = plan(spec)
    if not experiment["spec"].get("storage", {}).get("claimName"):
        _create(lambda: client.CoreV1Api(api()).create_namespaced_persistent_volume_claim(
            namespace, manifests.claim(experiment)))
    records = (experiment.get("status") or {}).get("jobs") or {}
    running = {manifests.child_name(name, h, r["attempts"]) for h, r in records.items() if r.get("state") == "Running"}
    observed = _observe(namespace, name, running)
    decision = reconcile(name, experiment["spec"], jobs, observed, experiment.get("status") or {}, time.time(),
                         experiment["metadata"].get("generation", 0))
    core = client.CoreV1Api(api())
    for child in decision.delete:  # a failed attempt is removed before the next starts
        try:
            custom.delete_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", child,
                                                   propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                raise
        _messages.pop((namespace, child), None)
    for job, attempt in decision.create:
        _create(lambda: core.create_namespaced_config_map(namespace, manifests.config_map(experiment, job, attempt)))
        _create(lambda: custom.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs",
                                                               manifests.pytorchjob(experiment, job, attempt)))
    _patch_status(custom, namespace, name, decision.status)
    for kind, reason, message in decision.events:
        _event(core, experiment, kind, reason, message)
    metrics.record(name, decision.status, jobs)
    if decision.requeue_after is not None:
        timer = threading.Timer(decision.requeue_after + 0.1, reconcile_experiment, (namespace, name))
        timer.daemon = True
        timer.start()


def _observe(namespace: str, name: str, running: set[str]) -> dict[str, Observed]:
    """Children and their conditions; pods are read only for children that just finished."""
    custom = client.CustomObjectsApi(api())
    children = custom.list_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs",
                                                    label_selector=f"{manifests.LABEL_EXPERIMENT}={name}")["items"]
    observed = {}
    for child in children:
        condition, message = job_condition(child)
        termination = ""
        if child["metadata"]["name"] not in running:
            pass
        elif condition == "Succeeded":
            termination = _termination_message(namespace, child["metadata"]["name"])
        elif condition == "Failed":
            message = _termination_message(namespace, child["metadata"]["name"]) or message
        observed[child["metadata"]["name"]] = Observed(child["metadata"]["name"], condition, message, termination)
    return observed


def _termination_message(namespace: str, job_name: str) -> str:
    """The master pod's termination message: the trainer's summary, or its last log lines on failure."""
    try:
        pod = client.CoreV1Api(api()).read_namespaced_pod(f"{job_name}-master-0", namespace)
        for status in pod.status.container_statuses or []:
            if status.name == "pytorch" and status.state and status.state.terminated:
                if status.state.terminated.message:
                    return status.state.terminated.message
    except ApiException:
        pass
    return _messages.get((namespace, job_name), "")


def _create(call) -> None:
    """Create; an existing object of ours (same deterministic name) is adopted, never duplicated."""
    try:
        call()
    except ApiException as err:
        if err.status != 409:
            raise


def _patch_status(custom, namespace: str, name: str, status: dict) -> None:
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})


def _event(core, experiment: dict, kind: str, reason: str, message: str) -> None:
    meta = experiment["metadata"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": experiment["apiVersion"], "kind": experiment["kind"],
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": kind, "reason": reason, "message": message[:1000], "source": {"component": "stilts-operator"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1}
    try:
        core.create_namespaced_event(meta["namespace"], body)
    except ApiException as err:  # events are best effort
        log.warning("could not post event %s: %s", reason, err.reason)


def run(namespaces: list[str], standalone: bool = True, peering: str | None = None) -> None:
    """Entry point of `stilts operator` and of the operator image. Ports come from the environment
    (STILTS_METRICS_PORT, default 8080; STILTS_HEALTH_PORT for /healthz, default 8081)."""
    liveness = f"http://0.0.0.0:{os.environ.get('STILTS_HEALTH_PORT', '8081')}/healthz"
    level = os.environ.get("STILTS_LOG_LEVEL", "INFO").upper()
    kopf.configure(verbose=level == "DEBUG")
    logging.getLogger().setLevel(level)
    kopf.run(clusterwide=not namespaces, namespaces=namespaces, standalone=standalone, peering_name=peering,
             liveness_endpoint=liveness)
