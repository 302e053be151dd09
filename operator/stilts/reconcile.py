"""The scheduler: one pure function that both executors drive.

    (planned jobs, job records, observed children, now, policy) -> what to create, what to delete,
                                                                  the new records, events, results

The cluster operator observes its children through a job backend (backends/); the local executor
observes processes and COMPLETE markers. Both call `reconcile`, so readiness, the concurrency
bound, retries with backoff, permanent failures, the start deadline, fencing and blocking behave the
same everywhere.

Level-triggered: every call starts from what is observed and what the records say, so replaying it
is harmless. The records are the memory: per job hash its state and attempt count. A child removed
after success (TTL, a person) does not make a finished job run again, and the attempt counter
survives restarts of the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stilts_contract import summary as summaries

from .plan import Job

# A job's states. ACTIVE ones have a child (PyTorchJob, TrainJob or process) that counts against
# maxConcurrentJobs; Queued is a child that a queue (Kueue) holds suspended.
STATES = ("Pending", "Queued", "Starting", "Running", "Backoff", "Succeeded", "Failed", "Blocked")
ACTIVE = ("Queued", "Starting", "Running")
TERMINAL = ("Succeeded", "Failed", "Blocked")
FENCE_POLL_SECONDS = 2.0  # how soon to look again while a failed attempt's pods are still going away


@dataclass(frozen=True)
class Policy:
    max_active: int
    retry_limit: int
    backoff_seconds: float
    start_deadline_seconds: float = 0  # 0: wait for ever

    @classmethod
    def of(cls, spec, max_active: int | None = None) -> "Policy":
        """From an ExperimentSpec; `max_active` lowers the bound (the local executor's --parallel)."""
        bound = spec.max_concurrent_jobs if max_active is None else min(max_active, spec.max_concurrent_jobs)
        return cls(bound, spec.retries.limit, spec.retries.backoff_seconds, spec.start_deadline_seconds)


@dataclass
class Observed:
    """One child as an executor saw it, in the words of every backend.

    state: Pending (created, not running yet), Queued (suspended by a queue), Running, Succeeded,
    Failed, or Terminating (deleted, but pods of it are still there: the next attempt must wait)."""
    state: str
    permanent: bool = False   # a failure that retrying cannot fix (the trainer's exit 2)
    # Stopped from outside (the trainer's exit 3, a pod Kubernetes takes away): retried, not counted. Seen
    # on a child still running too (its pod terminating), since the pod may be gone once the child fails.
    preempted: bool = False
    reason: str = ""          # one CamelCase word: BadInput, Unschedulable, ImagePullBackOff, ...
    message: str = ""         # why it failed, or why it waits
    summary: str = ""         # what the job left when it succeeded (COMPLETE / termination message)


@dataclass
class Decision:
    create: list[tuple[Job, int]] = field(default_factory=list)   # (job, attempt)
    delete: list[str] = field(default_factory=list)               # children whose pods must not run again
    records: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)                   # job hash -> compact summary, new ones
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None


def backoff_delay(policy: Policy, attempts: int) -> float:
    return policy.backoff_seconds * 2 ** (attempts - 1)


def reconcile(jobs: list[Job], records: dict, observed: dict[str, Observed], now: float, policy: Policy,
              child_name: Callable[[str, int], str], rearm: bool = False) -> Decision:
    """Move every job's record forward from what is observed, then start what is ready."""
    d = Decision()
    # Records of jobs the plan no longer has (an edited spec) are dropped: the status stays bounded.
    recs = {j.hash: dict(records.get(j.hash) or {"state": "Pending", "attempts": 0}) for j in jobs}
    waits: list[float] = []
    if rearm:  # attempts keep counting (every attempt has its own child name); the retry budget starts over
        for job in jobs:
            rec = recs[job.hash]
            if rec["state"] in ("Failed", "Blocked"):  # preemptions so far are inside rearmedAt
                recs[job.hash] = {"state": "Pending", "attempts": rec["attempts"], "rearmedAt": rec["attempts"]}
                d.events.append(("Normal", "JobRearmed", f"{job.name}: re-armed by a retry request"))

    def move(rec: dict, state: str, **extra) -> None:
        if rec["state"] != state:
            rec["since"] = now
        for key in ("reason", "message", "retryAfter"):
            rec.pop(key, None)
        rec.update(state=state, **{k: v for k, v in extra.items() if v not in ("", None)})

    def fail_attempt(job: Job, rec: dict, name: str, child: Observed, reason: str, message: str) -> None:
        d.delete.append(name)
        message = message[:500]
        if (child.preempted or rec.get("disruptedAttempt") == rec["attempts"]) and not child.permanent:
            # Not the job's fault, and its checkpoint is on the volume: the next attempt resumes there at
            # once (after fencing), and the retry budget stays for real failures.
            rec["preemptions"] = rec.get("preemptions", 0) + 1
            move(rec, "Backoff", reason=reason, message=message, retryAfter=now)
            d.events.append(("Warning", "JobPreempted", f"{job.name} attempt {rec['attempts']} was stopped from "
                                                        f"outside ({reason}); resuming, not counted as a retry"))
            return
        tries = rec["attempts"] - rec.get("rearmedAt", 0) - rec.get("preemptions", 0)
        if child.permanent or tries > policy.retry_limit:
            move(rec, "Failed", reason=reason, message=message)
            why = "a permanent failure, not retried" if child.permanent else f"after {rec['attempts']} attempts"
            d.events.append(("Warning", "JobFailed", f"{job.name} failed, {why}: {reason}: {message}"))
        else:
            delay = backoff_delay(policy, tries)
            move(rec, "Backoff", reason=reason, message=message, retryAfter=now + delay)
            d.events.append(("Warning", "JobRetrying", f"{job.name} attempt {rec['attempts']} failed, retrying in "
                                                       f"{delay:g}s: {reason}: {message}"))

    # 1. Observe: move each active job's record forward from its child.
    for job in jobs:
        rec = recs[job.hash]
        if rec["state"] not in ACTIVE:
            continue
        name = child_name(job.hash, rec["attempts"])
        child = observed.get(name)
        if child is not None and child.preempted and child.state != "Failed":
            rec["disruptedAttempt"] = rec["attempts"]  # remembered: its pods may be gone when it fails
        if child is not None and child.state == "Terminating":  # deleted by someone: wait until it is gone
            waits.append(FENCE_POLL_SECONDS)
        elif child is None:  # created, then lost: create it again, same name
            move(rec, "Pending")
            rec["attempts"] -= 1
            d.events.append(("Warning", "JobLost", f"{job.name}: its child {name} disappeared; creating it again"))
        elif child.state == "Succeeded":
            try:
                summary = summaries.parse(child.summary, job.hash)
            except summaries.SummaryError as err:
                fail_attempt(job, rec, name, child, "InvalidSummary", str(err))
                continue
            move(rec, "Succeeded")
            d.results[job.hash] = summary.compact()
            d.events.append(("Normal", "JobSucceeded", f"{job.name} ({name}) succeeded"))
        elif child.state == "Failed":
            fail_attempt(job, rec, name, child, child.reason or ("BadInput" if child.permanent else "Failed"),
                         child.message)
        elif child.state == "Queued":
            move(rec, "Queued", reason=child.reason, message=child.message)
        elif child.state == "Running":
            move(rec, "Running")
        else:  # Pending: created, its pods not running yet; the start deadline counts from here
            move(rec, "Starting", reason=child.reason, message=child.message)
            deadline = policy.start_deadline_seconds
            if deadline and now - rec["since"] >= deadline:
                why = f"{child.reason}: {child.message}" if child.reason else "its pods never ran"
                fail_attempt(job, rec, name, child, "StartDeadlineExceeded",
                             f"did not start within {deadline:g}s ({why})")
            elif deadline:
                waits.append(rec["since"] + deadline - now)

    # 2. Failure spreads to descendants: they can never be ready.
    changed = True
    while changed:
        changed = False
        for job in jobs:
            rec = recs[job.hash]
            if rec["state"] in ("Pending", "Backoff") and any(
                    recs[p]["state"] in ("Failed", "Blocked") for p in job.depends_on):
                move(rec, "Blocked", reason="ParentFailed", message="a job it depends on failed")
                changed = True

    # 3. Act: start ready jobs, parents first, up to the concurrency bound.
    active = sum(1 for r in recs.values() if r["state"] in ACTIVE)
    for job in jobs:
        rec = recs[job.hash]
        if rec["state"] == "Backoff":
            if rec["retryAfter"] > now:
                waits.append(rec["retryAfter"] - now)
                continue
            previous = child_name(job.hash, rec["attempts"])
            if previous in observed:  # fencing: the failed attempt's pods must be gone first
                d.delete.append(previous)
                waits.append(FENCE_POLL_SECONDS)
                continue
        elif rec["state"] != "Pending":
            continue
        if not all(recs[p]["state"] == "Succeeded" for p in job.depends_on):
            continue
        if active >= policy.max_active:
            break
        rec["attempts"] += 1
        move(rec, "Starting")
        rec["created"] = now
        d.create.append((job, rec["attempts"]))
        active += 1
        d.events.append(("Normal", "JobCreated", f"{job.name} attempt {rec['attempts']} "
                                                 f"({child_name(job.hash, rec['attempts'])})"))
    d.requeue_after = max(0.0, min(waits)) if waits else None
    d.delete = list(dict.fromkeys(d.delete))
    d.records = recs
    return d


def counts(records: dict) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for rec in records.values():
        out[rec["state"]] += 1
    return out


def phase(records: dict) -> str:
    c = counts(records)
    total = sum(c.values())
    if total and c["Succeeded"] == total:
        return "Succeeded"
    if not any(c[s] for s in ("Pending", "Backoff") + ACTIVE):
        return "Failed"  # nothing left to run, and not everything succeeded
    if c["Pending"] == total:
        return "Pending"
    return "Running"
