"""Kubeflow Trainer v2: TrainJob `trainer.kubeflow.org/v1alpha1`, on JobSet.

Each TrainJob refers to the chart's ClusterTrainingRuntime `stilts-torch-distributed`, which carries
what every job shares (the restricted security context, no service-account token, the metrics port,
restartPolicy Never). The TrainJob sets image, command, nodes, processes per node and resources, and
adds through `runtimePatches` what is per job: the claim, /dev/shm, the job's ConfigMap,
labels, node selector and tolerations. Trainer is v2.2.0, the version Kueue v0.17.0's module builds
against: Kueue rewrites each TrainJob it admits through those API types, so a field only a newer
Trainer has is dropped on admission (seen on the test control plane with Trainer v2.3: a runtime
patch's terminationGracePeriodSeconds vanished and JobSet refused the changed template). The grace
period is therefore the runtime's (the chart's `trainjobTerminationGracePeriodSeconds`, which the chart
also gives the operator as STILTS_TRAINJOB_GRACE_SECONDS, so that torchrun's shutdown timeout follows it).
The Trainer's torch plugin sets the PET_* variables torchrun reads. The leader is the pod with completion
index 0 of the first Job, found by JobSet's labels.
"""

from __future__ import annotations

import os

from stilts_contract.names import shutdown_timeout

from . import Backend, from_conditions
from ..reconcile import Observed
from ..spec import TERMINATION_GRACE_SECONDS

RUNTIME = "stilts-torch-distributed"
REPLICATED_JOB = "node"          # the runtime's replicated job, and its container's name
MANAGER = "stilts.dev/operator"  # who owns our runtime patch (Kueue adds its own)
LEADER_LABELS = {"jobset.sigs.k8s.io/job-index": "0", "batch.kubernetes.io/job-completion-index": "0"}


def runtime_grace() -> int:
    """The grace period of the stilts ClusterTrainingRuntime, as the chart told the operator."""
    return int(os.environ.get("STILTS_TRAINJOB_GRACE_SECONDS") or TERMINATION_GRACE_SECONDS)


def manifest(experiment: dict, job, attempt: int, name: str, template: dict, metadata: dict) -> dict:
    pod = template["spec"]
    container = pod["containers"][0]
    nodes = job.launch.workers
    # torchrun's shutdown timeout follows the runtime's grace period (the pod's grace is the runtime's).
    env = [{"name": e["name"], "value": str(shutdown_timeout(runtime_grace()))}
           if e["name"] == "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" else e for e in container["env"]]
    spec = {
        "runtimeRef": {"name": RUNTIME, "kind": "ClusterTrainingRuntime", "apiGroup": "trainer.kubeflow.org"},
        "trainer": {"image": container["image"], "command": container["command"], "env": env,
                    "numNodes": nodes, "numProcPerNode": job.launch.processes,
                    "resourcesPerNode": container["resources"]},
        "runtimePatches": [{"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
            "name": REPLICATED_JOB, "template": {"spec": {"template": {
                "metadata": {"labels": template["metadata"]["labels"]},
                "spec": {"volumes": pod["volumes"],
                         "containers": [{"name": REPLICATED_JOB, "volumeMounts": container["volumeMounts"]}],
                         **({"nodeSelector": pod["nodeSelector"]} if pod.get("nodeSelector") else {}),
                         **({"tolerations": pod["tolerations"]} if pod.get("tolerations") else {})}}}}}]}}}}],
    }
    if metadata["labels"].get("kueue.x-k8s.io/queue-name"):
        spec["suspend"] = True  # Kueue admits it by resuming it; created suspended, no pod races the quota
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": metadata, "spec": spec}


def observe(child: dict, pods: list[dict]) -> Observed:
    nodes = (child.get("spec") or {}).get("trainer", {}).get("numNodes", 1)
    return from_conditions(BACKEND, child, pods, "Complete", nodes)


def is_leader(pod: dict) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in LEADER_LABELS.items())


def unsupported(spec) -> list[str]:
    """What Trainer v2.2's runtime patches cannot set per TrainJob (spec: an ExperimentSpec)."""
    scheduling = spec.scheduling
    problems = []
    if scheduling.priority_class_name:
        problems.append("spec.scheduling.priorityClassName: the trainjob backend cannot set a priority class per "
                        "job (Trainer v2.2 runtime patches do not carry it); set it in the stilts "
                        "ClusterTrainingRuntime, or use Kueue's WorkloadPriorityClass")
    grace = scheduling.termination_grace_period_seconds
    if "termination_grace_period_seconds" in scheduling.model_fields_set and grace != runtime_grace():
        problems.append(f"spec.scheduling.terminationGracePeriodSeconds: the trainjob backend takes the grace period "
                        f"from the stilts ClusterTrainingRuntime ({runtime_grace()} s; Trainer v2.2 runtime patches "
                        f"do not carry it); remove it and set the chart's trainjobTerminationGracePeriodSeconds to "
                        f"{grace} instead")
    return problems


def replica(pod: dict) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return f"{labels.get('jobset.sigs.k8s.io/job-index', '')}/{labels.get('batch.kubernetes.io/job-completion-index', '')}"


BACKEND = Backend(
    name="trainjob", group="trainer.kubeflow.org", version="v1alpha1", plural="trainjobs", kind="TrainJob",
    container=REPLICATED_JOB,
    # JobSet names Jobs <trainjob>-node-<i> and pods <trainjob>-node-<i>-<index>-<random 5>; the pod's
    # hostname <trainjob>-node-<i>-<index> must stay a DNS label of at most 63 characters.
    max_name=46,
    manifest=manifest, observe=observe, is_leader=is_leader, replica=replica, unsupported=unsupported,
    # Trainer v2 re-creates the JobSet of a TrainJob that is being deleted in the foreground (seen on
    # the test control plane: the deletion never ends, and new pods keep coming); with Background the
    # TrainJob goes at once and the garbage collector takes its JobSet, Jobs and pods.
    delete_propagation="Background")
