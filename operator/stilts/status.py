"""An experiment's status: a bounded summary of its job records (the records themselves live in a
ConfigMap, see manifests.store_names), with conditions as the Kubernetes API conventions ask:
`lastTransitionTime` kept while a condition's status does not change, `observedGeneration`, and
one entry per type (a list-map keyed by type in the CRD).

Pure: (planned jobs, records, previous status, generation, now) -> status.
"""

from __future__ import annotations

import time

from . import answer
from .plan import Job
from .reconcile import TERMINAL, counts, phase

MAX_LISTED = 10      # failed and waiting jobs named in the status; `stilts status` lists them all
MESSAGE_LENGTH = 200


def iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def eta(jobs: list[Job], records: dict, max_active: int) -> float | None:
    """Seconds until every job is done: the jobs left times the mean duration of finished jobs of their
    phase, spread over the concurrency bound. None until a job of each phase left has finished."""
    durations: dict[str, list[float]] = {}
    for job in jobs:
        rec = records.get(job.hash, {})
        if rec.get("state") == "Succeeded" and rec.get("created"):
            durations.setdefault(job.phase, []).append(rec["since"] - rec["created"])
    left = [j for j in jobs if records.get(j.hash, {}).get("state") not in TERMINAL]
    if not left:
        return 0.0
    if any(j.phase not in durations for j in left):
        return None
    work = sum(sum(durations[j.phase]) / len(durations[j.phase]) for j in left)
    return work / max(1, max_active)


def conditions(wanted: list[dict], previous: list[dict], generation: int, now: float) -> list[dict]:
    """Each wanted condition with lastTransitionTime carried over while its status is unchanged."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for c in wanted:
        old = before.get(c["type"])
        since = old["lastTransitionTime"] if old and old.get("status") == c["status"] and \
            old.get("lastTransitionTime") else iso(now)
        out.append({**c, "observedGeneration": generation, "lastTransitionTime": since})
    return out


def _short(text: str, length: int = MESSAGE_LENGTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[:length - 1] + "…"


def summarize(jobs: list[Job], records: dict, previous: dict, generation: int, now: float,
              design=None, looks: list[dict] | None = None) -> dict:
    c = counts(records)
    total = len(jobs)
    by_hash = {j.hash: j for j in jobs}
    failed = [(by_hash[h], r) for h, r in records.items() if r["state"] == "Failed"]
    waiting = [(by_hash[h], r) for h, r in records.items() if r["state"] in ("Starting", "Queued")]
    waiting.sort(key=lambda item: item[1].get("since", now))
    looks = looks or []
    current = phase(records, answering=design is not None and not answer.stopped(looks))
    parts = []
    if failed:
        job, rec = failed[0]
        parts.append(f"{len(failed)} failed ({job.name}: {rec.get('reason', 'Failed')}: {rec.get('message', '')})")
    stuck = [(j, r) for j, r in waiting if r.get("reason") and r["state"] == "Starting"]
    if stuck:
        job, rec = stuck[0]
        parts.append(f"{len(stuck)} cannot start yet ({job.name}: {rec['reason']}: {rec.get('message', '')})")
    if c["Queued"]:
        parts.append(f"{c['Queued']} queued")
    if c["Backoff"]:
        parts.append(f"{c['Backoff']} waiting to retry")
    answered = answer.status(design, looks)
    if answered and current == "Running" and not parts:
        parts.append(f"{c['Running']} running, {answered['summary']}")
    message = _short("; ".join(parts)) or {"Succeeded": "all jobs succeeded", "Pending": "starting"}.get(
        current, f"{c['Running']} running")
    if answered and current == "Succeeded":
        message = f"answered: {answered['summary']}"
    blocked = c["Blocked"]
    wanted = [
        {"type": "Ready", "status": "True" if current == "Succeeded" else "False",
         "reason": "AllJobsSucceeded" if current == "Succeeded" else
         ("JobsFailed" if current == "Failed" else "JobsOutstanding"),
         "message": f"{c['Succeeded']}/{total} jobs succeeded"},
        {"type": "Progressing", "status": "True" if current in ("Pending", "Running") else "False",
         "reason": "JobsRunning" if current in ("Pending", "Running") else "NothingLeftToRun",
         "message": message if current in ("Pending", "Running") else ""},
        {"type": "Degraded", "status": "True" if failed or blocked else "False",
         "reason": "JobsFailed" if failed or blocked else "NoFailures",
         "message": f"{len(failed)} failed, {blocked} blocked by a failed parent" if failed or blocked else ""},
    ]
    return {
        "phase": current,
        "progress": f"{c['Succeeded']}/{total}",
        "running": c["Running"],
        "waiting": c["Starting"] + c["Queued"],
        "queued": c["Queued"],
        "failed": len(failed) + blocked,
        "message": message,
        "counts": c,
        "failures": [{"job": j.name, "attempts": r.get("attempts", 0), "reason": r.get("reason", ""),
                      "message": _short(r.get("message", ""), 300)} for j, r in failed[:MAX_LISTED]],
        "waitingJobs": [{"job": j.name, "state": r["state"], "reason": r.get("reason", ""),
                         "message": _short(r.get("message", ""), 300), "since": iso(r.get("since", now))}
                        for j, r in waiting[:MAX_LISTED]],
        "observedGeneration": generation,
        "conditions": conditions(wanted, previous.get("conditions"), generation, now),
        **({"answer": answered} if answered else {}),
    }


def invalid(message: str, previous: dict, generation: int, now: float, reason: str = "InvalidSpec") -> dict:
    """The status of an experiment that cannot run (InvalidSpec, or PolicyViolation): no child is created."""
    wanted = [{"type": "Ready", "status": "False", "reason": reason, "message": message},
              {"type": "Progressing", "status": "False", "reason": reason, "message": message}]
    return {"phase": "Failed", "message": _short(message, 400), "observedGeneration": generation,
            "conditions": conditions(wanted, previous.get("conditions"), generation, now)}


def changed(previous: dict, new: dict) -> bool:
    """Whether writing `new` would change what the status says (unchanged statuses are not patched)."""
    return any((previous or {}).get(k) != v for k, v in new.items())
