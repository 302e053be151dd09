"""The operator's Prometheus metrics (prefix stilts_). Names are the contract with the Grafana
dashboard; tests check every dashboard query against what is exported."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EXPERIMENTS = Gauge("stilts_experiments", "Experiments by phase", ["phase"])
JOBS = Gauge("stilts_jobs", "Jobs of an experiment by state", ["experiment", "state"])
JOB_SECONDS = Histogram("stilts_job_duration_seconds", "Wall time of succeeded jobs (creation to success)",
                        ["phase", "backbone"], buckets=(30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400))
RECONCILE_SECONDS = Histogram("stilts_reconcile_duration_seconds", "Time of one reconcile of one experiment",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter("stilts_reconcile_errors_total", "Reconciles that raised")
ACCURACY = Gauge("stilts_xnli_accuracy", "Zero-shot XNLI test accuracy",
                 ["experiment", "backbone", "intermediate_task", "seed", "language"])
GAIN = Gauge("stilts_xnli_gain", "XNLI test accuracy minus the same backbone and seed's baseline",
             ["experiment", "backbone", "intermediate_task", "seed", "language"])

_phases: dict[str, str] = {}
_timed: set[tuple[str, str]] = set()


def serve(port: int) -> None:
    start_http_server(port)


def record(experiment: str, status: dict, jobs) -> None:
    _phases[experiment] = status.get("phase", "Pending")
    counts = defaultdict(int, {p: 0 for p in ("Pending", "Running", "Succeeded", "Failed")})
    counts.update({p: sum(1 for v in _phases.values() if v == p) for p in set(_phases.values())})
    for phase, n in counts.items():
        EXPERIMENTS.labels(phase).set(n)
    for state, n in status.get("counts", {}).items():
        JOBS.labels(experiment, state).set(n)
    records = status.get("jobs", {})
    for job in jobs:
        rec = records.get(job.hash, {})
        key = (experiment, job.hash)
        if rec.get("state") == "Succeeded" and key not in _timed and rec.get("startedAt") and rec.get("finishedAt"):
            JOB_SECONDS.labels(job.phase, job.backbone).observe(rec["finishedAt"] - rec["startedAt"])
            _timed.add(key)
    baseline = {(r["backbone"], r["seed"], r["language"]): r["accuracy"]
                for r in status.get("results", []) if r["intermediateTask"] == "none"}
    for r in status.get("results", []):
        labels = (experiment, r["backbone"], r["intermediateTask"], str(r["seed"]), r["language"])
        ACCURACY.labels(*labels).set(r["accuracy"])
        base = baseline.get((r["backbone"], r["seed"], r["language"]))
        if base is not None and r["intermediateTask"] != "none":
            GAIN.labels(*labels).set(r["accuracy"] - base)


def forget(experiment: str) -> None:
    _phases.pop(experiment, None)
