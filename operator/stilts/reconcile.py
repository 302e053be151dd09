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

A sequential design (spec.answer) adds one more thing to decide: when every evaluate job of the
seeds planned so far has ended, the scheduler looks (answer.py). The executor computes the look (the
report on its results), the scheduler records it beside the job records, in the same write, and the
next plan has the next wave's seeds when the look continued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stilts_contract import summary as summaries

from . import answer
from .plan import Job

# A job's states. ACTIVE ones have a child (PyTorchJob, TrainJob or process) that counts against
# maxConcurrentJobs; Queued is a child that a queue (Kueue) holds suspended.
STATES = ("Pending", "Queued", "Starting", "Running", "Backoff", "Succeeded", "Failed", "Blocked")
ACTIVE = ("Queued", "Starting", "Running")
TERMINAL = ("Succeeded", "Failed", "Blocked")
FENCE_POLL_SECONDS = 2.0  # how soon to look again while a failed attempt's pods are still going away
LOOK_POLL_SECONDS = 2.0   # how soon to try a look again whose inputs are still arriving


@dataclass(frozen=True)
class Policy:
    max_active: int
    retry_limit: int
    backoff_seconds: float
    start_deadline_seconds: float = 0  # 0: wait for ever
    design: answer.Design | None = None  # sequential seeds (spec.answer), or a fixed design
    preemption_limit: int = 20

    @classmethod
    def of(cls, spec, max_active: int | None = None) -> "Policy":
        """From an ExperimentSpec; `max_active` lowers the bound (the local executor's --parallel)."""
        bound = spec.max_concurrent_jobs if max_active is None else min(max_active, spec.max_concurrent_jobs)
        return cls(bound, spec.retries.limit, spec.retries.backoff_seconds, spec.start_deadline_seconds,
                   answer.Design.of(spec), spec.retries.preemption_limit)


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
    # Pods, by uid: those whose end decided a failed child's outcome (the newest pod of each replica; a pod
    # replaced in place is history), and those of a live child Kubernetes is taking away. A failure is a
    # preemption when its own pods were taken away, not when an earlier pod of the attempt was.
    failing: tuple[str, ...] = ()
    disrupted: tuple[str, ...] = ()
    replaced: int = 0         # pods of the child preempted and replaced in place (TrainJob's podFailurePolicy)
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
    looks: list[dict] = field(default_factory=list)               # the design's looks, this one's included


def backoff_delay(policy: Policy, attempts: int) -> float:
    return policy.backoff_seconds * 2 ** (attempts - 1)


MAX_PREEMPTION_DELAY = 3600.0  # consecutive preemptions back off, doubling, up to an hour
STREAK_RESET_SECONDS = 1800.0  # a preemption after an attempt ran this long starts a new streak


def preemptions(rec: dict) -> int:
    """A job's preemptions so far: attempts that ended stopped from outside, and pods replaced in place."""
    return rec.get("preemptions", 0) + rec.get("replacedBefore", 0) + rec.get("replacedThisAttempt", 0)


def reconcile(jobs: list[Job], records: dict, observed: dict[str, Observed], now: float, policy: Policy,
              child_name: Callable[[str, int], str], rearm: bool = False, looks: list[dict] | None = None,
              look: Callable[[dict, dict], dict | None] | None = None) -> Decision:
    """Move every job's record forward from what is observed, then start what is ready; with a design,
    look when a wave has ended: `look(records, new results)` is the executor's report of the wave (None
    while what it needs is not there yet, e.g. per-item results still on their way)."""
    step = _Pass(jobs, records, observed, now, policy, child_name, looks)
    if rearm:
        step.rearm()
    for job in jobs:       # 1. observe: each active job's record moves forward from its child
        step.observe(job)
    step.block()           # 2. failure spreads to descendants: they can never be ready
    step.start()           # 3. act: start ready jobs, parents first, up to the concurrency bound
    d = step.finish()
    planned = max((j.seed for j in jobs if j.phase == "evaluate" and j.seed is not None), default=0)
    if look is not None and answer.due(policy.design, d.looks, evaluations_ended(jobs, d.records), planned):
        _look(d, look(d.records, d.results), now)
    return d


class _Pass:
    """One reconcile: the records being moved forward, and the decision being made."""

    def __init__(self, jobs, records, observed, now, policy, child_name, looks):
        self.jobs, self.observed, self.now, self.policy, self.child_name = jobs, observed, now, policy, child_name
        self.d = Decision(looks=list(looks or []))
        # Records of jobs the plan no longer has (an edited spec) are dropped: the status stays bounded.
        self.recs = {j.hash: dict(records.get(j.hash) or {"state": "Pending", "attempts": 0}) for j in jobs}
        self.waits: list[float] = []

    def rearm(self) -> None:
        """Attempts keep counting (every attempt has its own child name); the retry budget starts over."""
        for job in self.jobs:
            rec = self.recs[job.hash]
            if rec["state"] in ("Failed", "Blocked"):  # preemptions so far are inside rearmedAt
                self.recs[job.hash] = {"state": "Pending", "attempts": rec["attempts"], "rearmedAt": rec["attempts"]}
                self.d.events.append(("Normal", "JobRearmed", f"{job.name}: re-armed by a retry request"))

    def move(self, rec: dict, state: str, **extra) -> None:
        if rec["state"] != state:
            rec["since"] = self.now
        for key in ("reason", "message", "retryAfter"):
            rec.pop(key, None)
        rec.update(state=state, **{k: v for k, v in extra.items() if v not in ("", None)})

    def observe(self, job: Job) -> None:
        rec = self.recs[job.hash]
        if rec["state"] not in ACTIVE:
            return
        name = self.child_name(job.hash, rec["attempts"])
        child = self.observed.get(name)
        if child is not None and self._taken_away(job, rec, name, child):
            return
        if child is not None and child.state == "Terminating":  # deleted by someone: wait until it is gone
            self.waits.append(FENCE_POLL_SECONDS)
        elif child is None:  # created, then lost: create it again, same name
            self.move(rec, "Pending")
            rec["attempts"] -= 1
            self.d.events.append(("Warning", "JobLost", f"{job.name}: its child {name} disappeared; creating it again"))
        elif child.state == "Succeeded":
            self._succeeded(job, rec, name, child)
        elif child.state == "Failed":
            self.fail(job, rec, name, child, child.reason or ("BadInput" if child.permanent else "Failed"),
                      child.message)
        elif child.state == "Queued":
            self.move(rec, "Queued", reason=child.reason, message=child.message)
        elif child.state == "Running":
            self.move(rec, "Running")
        else:  # Pending: created, its pods not running yet; the start deadline counts from here
            self._starting(job, rec, name, child)

    def _taken_away(self, job: Job, rec: dict, name: str, child: Observed) -> bool:
        """Remember pods Kubernetes takes from a live child (they may be gone when it fails) and count the
        preempted pods its backend replaced in place; past the limit, fail the attempt (True)."""
        if child.disrupted and child.state != "Failed":
            rec["disruptedPods"] = sorted(set(rec.get("disruptedPods", ())) | set(child.disrupted))
        if child.replaced <= rec.get("replacedThisAttempt", 0):
            return False
        rec["replacedThisAttempt"] = child.replaced
        if preemptions(rec) <= self.policy.preemption_limit or child.state not in ("Running", "Pending", "Queued"):
            return False
        self.fail(job, rec, name, Observed("Failed"), "PreemptionLimit",
                  f"preempted {preemptions(rec)} times ({child.replaced} pods replaced in place), past "
                  f"spec.retries.preemptionLimit ({self.policy.preemption_limit})")
        return True

    def _succeeded(self, job: Job, rec: dict, name: str, child: Observed) -> None:
        try:
            summary = summaries.parse(child.summary, job.hash)
        except summaries.SummaryError as err:
            self.fail(job, rec, name, child, "InvalidSummary", str(err))
            return
        self._ran(rec)
        self.move(rec, "Succeeded")
        self.d.results[job.hash] = summary.compact()
        self.d.events.append(("Normal", "JobSucceeded", f"{job.name} ({name}) succeeded"))

    def _starting(self, job: Job, rec: dict, name: str, child: Observed) -> None:
        self.move(rec, "Starting", reason=child.reason, message=child.message)
        deadline = self.policy.start_deadline_seconds
        if deadline and self.now - rec["since"] >= deadline:
            why = f"{child.reason}: {child.message}" if child.reason else "its pods never ran"
            self.fail(job, rec, name, child, "StartDeadlineExceeded", f"did not start within {deadline:g}s ({why})")
        elif deadline:
            self.waits.append(rec["since"] + deadline - self.now)

    def _ran(self, rec: dict) -> None:
        """Every attempt's wall time adds to the job's (what the answer cost: retries and preemptions too)."""
        if rec.get("created") is not None:
            rec["seconds"] = round(rec.get("seconds", 0.0) + max(0.0, self.now - rec["created"]), 1)

    @staticmethod
    def _preempted(rec: dict, child: Observed) -> bool:
        """Stopped from outside: its own pods said so, or the pods seen going away are all it had."""
        taken = set(rec.get("disruptedPods", ()))
        return child.preempted or bool(taken & set(child.failing)) or (bool(taken) and not child.failing)

    def fail(self, job: Job, rec: dict, name: str, child: Observed, reason: str, message: str) -> None:
        self.d.delete.append(name)
        message = message[:500]
        limit = self.policy.preemption_limit
        self._ran(rec)
        if reason != "PreemptionLimit" and self._preempted(rec, child) and not child.permanent:
            if preemptions(rec) < limit:
                self._resume(job, rec, reason, message)
                return
            reason, message = "PreemptionLimit", (f"preempted {preemptions(rec) + 1} times, past "
                                                 f"spec.retries.preemptionLimit ({limit}); the last: "
                                                 f"{reason}: {message}")[:500]
        rec["preemptedInARow"] = 0
        tries = rec["attempts"] - rec.get("rearmedAt", 0) - rec.get("preemptions", 0)
        if child.permanent or tries > self.policy.retry_limit:
            self.move(rec, "Failed", reason=reason, message=message)
            why = "a permanent failure, not retried" if child.permanent else f"after {rec['attempts']} attempts"
            self.d.events.append(("Warning", "JobFailed", f"{job.name} failed, {why}: {reason}: {message}"))
        else:
            delay = backoff_delay(self.policy, tries)
            self.move(rec, "Backoff", reason=reason, message=message, retryAfter=self.now + delay)
            self.d.events.append(("Warning", "JobRetrying", f"{job.name} attempt {rec['attempts']} failed, retrying "
                                                            f"in {delay:g}s: {reason}: {message}"))

    def _resume(self, job: Job, rec: dict, reason: str, message: str) -> None:
        """Not the job's fault, and its checkpoint is on the volume: the next attempt resumes there (after
        fencing), and the retry budget stays for real failures. Several in a row (a pod the kubelet evicts
        for its own memory comes back to the same fate) wait, doubling."""
        rec["preemptions"] = rec.get("preemptions", 0) + 1
        if self.now - rec.get("created", self.now) >= STREAK_RESET_SECONDS:
            rec["preemptedInARow"] = 0  # it ran a good while first: not a hot loop
        rec["preemptedInARow"] = rec.get("preemptedInARow", 0) + 1
        delay = min(backoff_delay(self.policy, rec["preemptedInARow"] - 1), MAX_PREEMPTION_DELAY) \
            if rec["preemptedInARow"] > 1 else 0.0
        self.move(rec, "Backoff", reason=reason, message=message, retryAfter=self.now + delay)
        self.d.events.append(("Warning", "JobPreempted", f"{job.name} attempt {rec['attempts']} was stopped from "
                              f"outside ({reason}); resuming" + (f" in {delay:g}s" if delay else "") +
                              f", not counted as a retry ({preemptions(rec)} of {self.policy.preemption_limit})"))

    def block(self) -> None:
        changed = True
        while changed:
            changed = False
            for job in self.jobs:
                rec = self.recs[job.hash]
                if rec["state"] in ("Pending", "Backoff") and any(
                        self.recs[p]["state"] in ("Failed", "Blocked") for p in job.depends_on):
                    self.move(rec, "Blocked", reason="ParentFailed", message="a job it depends on failed")
                    changed = True

    def start(self) -> None:
        active = sum(1 for r in self.recs.values() if r["state"] in ACTIVE)
        for job in self.jobs:
            rec = self.recs[job.hash]
            if not self._ready(job, rec):
                continue
            if active >= self.policy.max_active:
                break
            rec["attempts"] += 1
            # What was seen of the previous attempt's pods stays with it; its in-place replacements count.
            rec["replacedBefore"] = rec.get("replacedBefore", 0) + rec.pop("replacedThisAttempt", 0)
            rec.pop("disruptedPods", None)
            if not rec["replacedBefore"]:
                del rec["replacedBefore"]
            self.move(rec, "Starting")
            rec["created"] = self.now
            self.d.create.append((job, rec["attempts"]))
            active += 1
            self.d.events.append(("Normal", "JobCreated", f"{job.name} attempt {rec['attempts']} "
                                                          f"({self.child_name(job.hash, rec['attempts'])})"))

    def _ready(self, job: Job, rec: dict) -> bool:
        if rec["state"] == "Backoff":
            if rec["retryAfter"] > self.now:
                self.waits.append(rec["retryAfter"] - self.now)
                return False
            previous = self.child_name(job.hash, rec["attempts"])
            if previous in self.observed:  # fencing: the failed attempt's pods must be gone first
                self.d.delete.append(previous)
                self.waits.append(FENCE_POLL_SECONDS)
                return False
        elif rec["state"] != "Pending":
            return False
        return all(self.recs[p]["state"] == "Succeeded" for p in job.depends_on)

    def finish(self) -> Decision:
        self.d.requeue_after = max(0.0, min(self.waits)) if self.waits else None
        self.d.delete = list(dict.fromkeys(self.d.delete))
        self.d.records = self.recs
        return self.d


def evaluations_ended(jobs: list[Job], records: dict) -> bool:
    """Every evaluate job planned has succeeded, failed or been blocked: the wave has its results."""
    return all(records.get(j.hash, {}).get("state") in TERMINAL for j in jobs if j.phase == "evaluate")


def _look(d: Decision, taken: dict | None, now: float) -> None:
    if taken is None:  # the executor is still gathering what the look needs
        d.requeue_after = min(d.requeue_after, LOOK_POLL_SECONDS) if d.requeue_after is not None else LOOK_POLL_SECONDS
        return
    d.looks.append(taken)
    d.requeue_after = 0.0  # the next wave's jobs are planned and created on the next pass
    d.events.append(("Normal", "Look", look_message(taken)))


def look_message(look: dict) -> str:
    parts = [f"{k} {c['mean'] * 100:+.1f} +/-{c['halfWidth'] * 100:.1f}" + (" decided" if c["decided"] else "")
             if c.get("halfWidth") is not None else f"{k} no interval" for k, c in sorted(look["comparisons"].items())]
    then = "adding seeds" if look["decision"] == answer.CONTINUE else f"stopping: {look['decision']}"
    return f"look {look['look']} after {look['seeds']} seeds, {then} ({'; '.join(parts)})"


def counts(records: dict) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for rec in records.values():
        out[rec["state"]] += 1
    return out


def phase(records: dict, answering: bool = False) -> str:
    """The experiment's phase from its jobs; `answering`: a sequential design that has not stopped, so
    finished jobs do not finish the experiment (its next look adds seeds or stops it)."""
    c = counts(records)
    if answering:
        return "Running" if any(c[s] for s in ("Succeeded", "Failed", "Blocked") + ACTIVE + ("Backoff",)) else "Pending"
    total = sum(c.values())
    if total and c["Succeeded"] == total:
        return "Succeeded"
    if not any(c[s] for s in ("Pending", "Backoff") + ACTIVE):
        return "Failed"  # nothing left to run, and not everything succeeded
    if c["Pending"] == total:
        return "Pending"
    return "Running"
