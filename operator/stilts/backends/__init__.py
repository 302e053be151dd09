"""Job backends: the Kubernetes kinds that run one attempt of one job.

A backend knows its resource (group, version, plural, kind), how to wrap the trainer's pod template
(manifests.pod_template) into its object, how to read the object and its pods back as a neutral
`Observed` state (reconcile.py), which pod is the leader (rank 0: its termination message carries
the trainer's summary), and how long a child's name may be. The chart's RBAC and monitors follow the
backend it is installed with (tests/chart checks its rules against the operator's calls).

- `pytorchjob`: Kubeflow Training Operator v1, PyTorchJob `kubeflow.org/v1` (the default).
- `trainjob`: Kubeflow Trainer v2, TrainJob `trainer.kubeflow.org/v1alpha1` on JobSet.

The operator runs one backend, chosen by the operator-level setting STILTS_JOB_BACKEND (the chart's
`jobBackend` value), never by an experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from stilts_contract.names import is_permanent, is_preempted, launcher_exit

from ..reconcile import Observed

# Container waiting reasons that mean "this will not start by itself".
STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "RunContainerError", "CrashLoopBackOff")


@dataclass(frozen=True)
class Backend:
    name: str
    group: str
    version: str
    plural: str
    kind: str
    container: str                     # the trainer container's name, as the backend's controller expects it
    max_name: int                      # longest child name whose derived objects (pods, services) stay valid
    manifest: Callable                 # (experiment, job, attempt, name, pod template, metadata) -> the child
    observe: Callable                  # (child object, its pods) -> Observed
    is_leader: Callable[[dict], bool]  # pod -> whether it is rank 0
    replica: Callable[[dict], str]     # pod -> which replica it is (a pod replaced in place keeps it)
    unsupported: Callable[[object], list] = lambda spec: []  # ExperimentSpec -> what it cannot do (a line each)
    # How a failed child is deleted. Either way the next attempt waits until its pods are gone (the
    # operator fences on pods); Foreground also keeps the child visible meanwhile.
    delete_propagation: str = "Foreground"


def condition(obj: dict, kind: str) -> dict | None:
    """The object's condition of that type when it is true."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def terminated(pod: dict, container: str) -> dict | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return (status.get("state") or {}).get("terminated")
    return None


def waiting_reason(pods: list[dict]) -> tuple[str, str]:
    """Why pods that should run do not: unschedulable, an image that cannot be pulled, ..."""
    for pod in pods:
        status = pod.get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return c.get("reason") or "Unschedulable", c.get("message", "")
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return waiting["reason"], waiting.get("message", "")
    return "", ""


def disrupted(pod: dict) -> dict | None:
    """The DisruptionTarget condition Kubernetes puts on a pod it takes away: preemption by the
    scheduler, eviction (a drain), a taint, the pod garbage collector after a node is lost, a node
    shutdown."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            return c
    return None


def _uid(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("uid", "")


def latest(backend: Backend, pods: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the newest pod of each replica, the pods those replaced in place): what a child is made of now,
    and its history."""
    newest: dict[str, dict] = {}
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or ""):
        newest[backend.replica(pod)] = pod
    current = {_uid(p) for p in newest.values()}
    return list(newest.values()), [p for p in pods if _uid(p) not in current]


def _preempted_pod(backend: Backend, pod: dict) -> bool:
    """A pod its child replaced: preempted if Kubernetes said so, if its trainer exited 3, or if it was
    deleted before its trainer ended (the operator deletes children only after they end, so the deletion
    was someone else's: a drain, an eviction; the pod may be gone before its exit code was recorded)."""
    ended = terminated(pod, backend.container) or {}
    deleted_running = bool((pod.get("metadata") or {}).get("deletionTimestamp")) and not ended
    return bool(disrupted(pod)) or is_preempted(ended.get("exitCode", 0)) or deleted_running


def outcome(backend: Backend, state: str, pods: list[dict], fallback: str = "") -> Observed:
    """A finished child: the leader's termination message is the trainer's summary (success) or its
    one-line reason (failure); exit code 2 is a permanent failure; exit code 3 (the trainer stopped by
    SIGTERM) or a disruption condition is a preemption, retried without counting. A failure is read from
    the newest pod of each replica: a pod replaced in place (podFailurePolicy Ignore) is history, so its
    preemption does not excuse its successor's crash."""
    current, replaced = latest(backend, pods)
    ended = [(p, terminated(p, backend.container)) for p in (current if state != "Succeeded" else pods)]
    ended = [(p, t) for p, t in ended if t]
    if state == "Succeeded":
        # A leader replaced in place (a preempted pod, podFailurePolicy Ignore) leaves its failed
        # predecessor beside it: the summary is the one that exited 0.
        message = next((t.get("message", "") for p, t in ended if backend.is_leader(p) and t.get("exitCode") == 0), "")
        return Observed("Succeeded", summary=message)
    failed = [(p, t) for p, t in ended if t.get("exitCode")]
    # The pods that ended first decide (to the second, as Kubernetes records it): after one pod crashes, its
    # peers' collectives fail, or their controller stops them (exit 3), which must not make it a preemption.
    times = sorted(t.get("finishedAt") or "" for _, t in failed)
    first = [t["exitCode"] for _, t in failed if (t.get("finishedAt") or "") == times[0]] if times and times[0] else None
    code = launcher_exit([t["exitCode"] for _, t in failed], first)
    first = next((t for _, t in failed if t["exitCode"] == code), failed[0][1] if failed else {})
    message = (first.get("message") or "").strip().splitlines()[-1:] or [fallback]
    disruption = next(filter(None, map(disrupted, current)), None)
    failing = tuple(_uid(p) for p, _ in failed) + tuple(_uid(p) for p in current if disrupted(p) and not
                                                         terminated(p, backend.container))
    count = sum(_preempted_pod(backend, p) for p in replaced)
    if is_permanent(code):
        return Observed("Failed", permanent=True, reason="BadInput", message=message[0][:500], failing=failing,
                        replaced=count)
    if is_preempted(code) or disruption:
        why = disruption.get("reason", "Disrupted") if disruption else "Preempted"
        return Observed("Failed", preempted=True, reason=why, failing=failing, replaced=count,
                        message=(disruption or {}).get("message") or message[0][:500] or "stopped by SIGTERM")
    reason = f"Exit{first['exitCode']}" if first.get("exitCode") else "Failed"
    return Observed("Failed", reason=reason, message=message[0][:500], failing=failing, replaced=count)


def from_conditions(backend: Backend, child: dict, pods: list[dict], success: str, expected: int) -> Observed:
    """Both Kubeflow kinds report alike: a success condition (named `success`), Failed, Suspended
    while a queue holds them, and otherwise their pods tell whether they run or wait."""
    if condition(child, success):
        return outcome(backend, "Succeeded", pods)
    failed = condition(child, "Failed")
    if failed:
        return outcome(backend, "Failed", pods, failed.get("message", ""))
    if condition(child, "Suspended"):
        return Observed("Queued", reason="Suspended", message="waiting for admission by its queue")
    current, replaced = latest(backend, pods)
    seen = running_or_waiting(current, expected)
    # A pod of a live child going away was not our doing (we delete children, after they end): someone
    # deleted it, or Kubernetes disrupts it; its trainer is committing a checkpoint right now.
    seen.disrupted = tuple(_uid(p) for p in current if disrupted(p) or (p.get("metadata") or {}).get("deletionTimestamp"))
    seen.preempted = bool(seen.disrupted)
    seen.replaced = sum(_preempted_pod(backend, p) for p in replaced)
    return seen


def running_or_waiting(pods: list[dict], expected: int) -> Observed:
    """All expected pods running: Running. Otherwise Pending, with what they wait for."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if expected and len(running) >= expected:
        return Observed("Running")
    reason, message = waiting_reason(pods)
    return Observed("Pending", reason=reason, message=message)


def get(name: str) -> Backend:
    from . import pytorchjob, trainjob

    backends = {b.name: b for b in (pytorchjob.BACKEND, trainjob.BACKEND)}
    try:
        return backends[name]
    except KeyError:
        raise ValueError(f"job backend {name!r} is not one of {sorted(backends)} (set STILTS_JOB_BACKEND, the "
                         "chart's jobBackend)") from None
