"""The operator's decisions, as a pure function: (planned jobs, observed PyTorchJobs, recorded
status, now) -> (children to create, new status, events, when to look again).

Level-triggered: every call starts from what is observed and recorded, so replaying it is harmless.
The experiment's status is the record: per job hash its state and attempt count. A child removed
after success (TTL, a person) does not make a finished job run again, and the attempt counter
survives operator restarts (the training operator's own backoffLimit does not count failures
under restartPolicy: Never).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .manifests import child_name
from .plan import NONE, Job

TERMINAL = ("Succeeded", "Failed")


@dataclass
class Observed:
    """What the operator saw of one child PyTorchJob."""
    name: str
    condition: str            # Created | Running | Restarting | Succeeded | Failed | "" (no condition yet)
    message: str = ""
    termination_message: str = ""   # the master pod's, when the job succeeded


@dataclass
class Decision:
    create: list[tuple[Job, int]] = field(default_factory=list)   # (job, attempt)
    delete: list[str] = field(default_factory=list)   # failed children: their pods must not run again
    status: dict = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None


def job_condition(pytorchjob: dict) -> tuple[str, str]:
    """The latest true condition of a PyTorchJob and its message (watch conditions, not one pod)."""
    conditions = [c for c in (pytorchjob.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for kind in ("Failed", "Succeeded", "Restarting", "Running", "Created"):
        for c in conditions:
            if c.get("type") == kind:
                return kind, c.get("message", "")
    return "", ""


def reconcile(name: str, spec: dict, jobs: list[Job], observed: dict[str, Observed], status: dict,
              now: float, generation: int = 0) -> Decision:
    retries = spec.get("retries", {})
    limit, backoff = retries.get("limit", 3), retries.get("backoffSeconds", 60)
    max_running = spec.get("maxConcurrentJobs", 8)
    old = status.get("jobs") or {}
    records = {j.hash: dict(old.get(j.hash) or {"state": "Pending", "attempts": 0}) for j in jobs}
    decision = Decision()
    by_hash = {j.hash: j for j in jobs}

    # 1. Observe: move each job's record forward from its current child.
    for job in jobs:
        rec = records[job.hash]
        rec.setdefault("name", job.name)
        if rec["state"] != "Running":  # only a running attempt has news; a failure is counted once
            continue
        child = observed.get(child_name(name, job.hash, rec["attempts"]))
        if child is None:
            if rec["state"] == "Running":  # created, then lost (deleted by hand): create it again
                rec["state"] = "Pending"
                rec["attempts"] -= 1
            continue
        if child.condition == "Succeeded":
            rec.update(state="Succeeded", finishedAt=now, message="")
            if child.termination_message:
                rec["summary"] = _compact(child.termination_message)
            decision.events.append(("Normal", "JobSucceeded", f"{job.name} ({child.name}) succeeded"))
        elif child.condition == "Failed":
            decision.delete.append(child.name)
            if rec["attempts"] <= limit:
                delay = backoff * 2 ** (rec["attempts"] - 1)
                rec.update(state="Backoff", retryAfter=now + delay, message=child.message[:300])
                decision.events.append(("Warning", "JobRetrying", f"{job.name} failed (attempt {rec['attempts']}), "
                                        f"retrying in {delay}s: {child.message[:200]}"))
            else:
                rec.update(state="Failed", finishedAt=now, message=child.message[:300])
                decision.events.append(("Warning", "JobFailed", f"{job.name} failed after {rec['attempts']} "
                                        f"attempts: {child.message[:200]}"))
        else:
            rec["state"] = "Running"

    # 2. Failure spreads to descendants; they will never be ready.
    changed = True
    while changed:
        changed = False
        for job in jobs:
            rec = records[job.hash]
            if rec["state"] in ("Pending", "Backoff") and any(
                    records[d]["state"] in ("Failed", "Blocked") for d in job.depends_on):
                rec.update(state="Blocked", message="a parent job failed")
                changed = True

    # 3. Act: start ready jobs, up to the concurrency bound across the experiment.
    running = sum(1 for r in records.values() if r["state"] == "Running")
    waits = []
    for job in jobs:
        rec = records[job.hash]
        if rec["state"] == "Backoff":
            if rec["retryAfter"] > now:
                waits.append(rec["retryAfter"] - now)
                continue
        elif rec["state"] != "Pending":
            continue
        if not all(records[d]["state"] == "Succeeded" for d in job.depends_on):
            continue
        if running >= max_running:
            break
        rec["attempts"] += 1
        rec.update(state="Running", startedAt=rec.get("startedAt", now))
        rec.pop("retryAfter", None)
        decision.create.append((job, rec["attempts"]))
        running += 1
        decision.events.append(("Normal", "JobCreated", f"{job.name} attempt {rec['attempts']} "
                                f"({child_name(name, job.hash, rec['attempts'])})"))
    decision.requeue_after = min(waits) if waits else None
    decision.status = _status(jobs, records, by_hash, generation)
    return decision


def _compact(message: str) -> dict:
    try:
        data = json.loads(message)
    except json.JSONDecodeError:
        return {"raw": message[:200]}
    return {k: data[k] for k in ("test", "average", "devScore", "steps", "seconds") if k in data}


def _status(jobs: list[Job], records: dict, by_hash: dict, generation: int) -> dict:
    counts = {s: 0 for s in ("Pending", "Running", "Backoff", "Succeeded", "Failed", "Blocked")}
    for rec in records.values():
        counts[rec["state"]] += 1
    total = len(jobs)
    if counts["Succeeded"] == total:
        phase = "Succeeded"
    elif not (counts["Running"] or counts["Backoff"] or counts["Pending"]):
        phase = "Failed"  # nothing left to run, and not everything succeeded
    elif counts["Pending"] == total:
        phase = "Pending"
    else:
        phase = "Running"
    runs = {}
    for job in jobs:  # one entry per run: its current phase
        if job.seed is None:
            continue
        key = f"{job.backbone}/{job.intermediate_task}/{job.seed}"
        rec = records[job.hash]
        run = runs.setdefault(key, {"backbone": job.backbone, "intermediateTask": job.intermediate_task,
                                    "seed": job.seed, "phase": job.phase, "state": "Succeeded"})
        if rec["state"] != "Succeeded" and run["state"] == "Succeeded":
            run.update(phase=job.phase, state=rec["state"], job=records[job.hash].get("name", job.name),
                       attempts=rec["attempts"], message=rec.get("message", ""))
    results = []
    for job in jobs:
        summary = records[job.hash].get("summary") or {}
        if job.phase == "evaluate" and "test" in summary:
            for language, accuracy in sorted(summary["test"].items()):
                results.append({"backbone": job.backbone, "intermediateTask": job.intermediate_task or NONE,
                                "seed": job.seed, "language": language, "accuracy": accuracy})
    failed = counts["Failed"] + counts["Blocked"]
    conditions = [
        {"type": "Ready", "status": "True" if phase == "Succeeded" else "False",
         "reason": "AllJobsSucceeded" if phase == "Succeeded" else "JobsOutstanding",
         "message": f"{counts['Succeeded']}/{total} jobs succeeded"},
        {"type": "Degraded", "status": "True" if failed else "False",
         "reason": "JobsFailed" if failed else "NoFailures",
         "message": f"{counts['Failed']} failed, {counts['Blocked']} blocked by a failed parent" if failed else ""},
    ]
    return {"phase": phase, "progress": f"{counts['Succeeded']}/{total}", "observedGeneration": generation,
            "counts": counts, "jobs": records, "runs": sorted(runs.values(), key=lambda r: (r["backbone"],
                                                                                           r["intermediateTask"],
                                                                                           r["seed"])),
            "results": results, "conditions": conditions}
