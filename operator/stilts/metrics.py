"""The operator's Prometheus metrics (prefix stilts_). Names are the contract with the Grafana
dashboard; tests check every dashboard query against what is exported.

`Metrics` is owned by the operator's controller: it keeps only what the series of live experiments
need, and `forget` drops an experiment's series when the experiment is gone. Experiments are told
apart by `experiment` and `experiment_namespace` (two namespaces may each have an "exp"); the
plain `namespace` label is left to Prometheus, which sets it to the scraped operator's.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from stilts_contract.names import BASELINE

from .reconcile import STATES, counts

EXPERIMENTS = Gauge("stilts_experiments", "Experiments by phase", ["phase"])
JOBS = Gauge("stilts_jobs", "Jobs of an experiment by state", ["experiment", "experiment_namespace", "state"])
JOB_SECONDS = Histogram("stilts_job_duration_seconds", "Wall time of succeeded jobs (creation to success)",
                        ["phase", "backbone"], buckets=(30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400))
RECONCILE_SECONDS = Histogram("stilts_reconcile_duration_seconds", "Time of one reconcile of one experiment",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter("stilts_reconcile_errors_total", "Reconciles that raised")
ACCURACY = Gauge("stilts_xnli_accuracy", "Zero-shot XNLI test accuracy",
                 ["experiment", "experiment_namespace", "backbone", "intermediate_task", "seed", "language"])
GAIN = Gauge("stilts_xnli_gain", "XNLI test accuracy minus the same backbone and seed's baseline",
             ["experiment", "experiment_namespace", "backbone", "intermediate_task", "seed", "language"])
PHASE = Gauge("stilts_experiment_phase", "1 for the experiment's current phase", ["experiment", "experiment_namespace", "phase"])
WAITING = Gauge("stilts_job_waiting_seconds", "How long the experiment's longest-waiting job has been created without "
                "running (queued jobs not counted): what the stuck-job alert watches", ["experiment", "experiment_namespace"])
ETA = Gauge("stilts_experiment_eta_seconds", "Estimated seconds until every job of the experiment is done, from "
            "the mean duration of its finished jobs per phase", ["experiment", "experiment_namespace"])
ANSWER_HALF_WIDTH = Gauge("stilts_answer_half_width_points", "A dense-vs-MoE comparison's 95% half-width (adjusted "
                          "for the looks) at the sequential design's last look",
                          ["experiment", "experiment_namespace", "comparison"])
ANSWER_DECIDED = Gauge("stilts_answer_decided", "1 once a comparison is decided (its claim made)",
                       ["experiment", "experiment_namespace", "comparison"])
ANSWER_TARGET = Gauge("stilts_answer_target_half_width_points", "The half-width that answers a comparison "
                      "(spec.answer.targetHalfWidth)", ["experiment", "experiment_namespace"])
ANSWER_SEEDS = Gauge("stilts_answer_seeds", "Seeds the sequential design has planned so far",
                     ["experiment", "experiment_namespace"])
ANSWER_LOOK = Gauge("stilts_answer_look", "Looks the sequential design has taken", ["experiment", "experiment_namespace"])
PHASES = ("Pending", "Running", "Succeeded", "Failed")


def serve(port: int) -> None:
    start_http_server(port)


def results_table(jobs, results: dict) -> list[dict]:
    """One row per (evaluate job, language) with a result: backbone, task, seed, language, accuracy."""
    rows = []
    for job in jobs:
        summary = results.get(job.hash) or {}
        if job.phase == "evaluate":
            for language, accuracy in sorted((summary.get("test") or {}).items()):
                rows.append({"backbone": job.backbone, "intermediateTask": job.intermediate_task or BASELINE,
                             "seed": job.seed, "language": language, "accuracy": accuracy})
    return rows


class Metrics:
    def __init__(self):
        self.phases: dict[tuple, str] = {}        # (experiment, namespace) -> phase
        self.timed: dict[tuple, set[str]] = {}    # (experiment, namespace) -> job hashes whose duration was observed
        self.series: dict[tuple, set[tuple]] = {}  # (experiment, namespace) -> accuracy/gain label sets
        self.comparisons: dict[tuple, set[str]] = {}  # (experiment, namespace) -> comparisons with answer series

    def record(self, namespace: str, experiment: str, phase: str, jobs, records: dict, results: dict,
               eta: float | None, now: float | None = None, answer: dict | None = None) -> None:
        key = (experiment, namespace)
        self.phases[key] = phase
        for p in PHASES:
            EXPERIMENTS.labels(p).set(sum(1 for v in self.phases.values() if v == p))
            PHASE.labels(*key, p).set(1 if p == phase else 0)
        starting = [r["since"] for r in records.values() if r.get("state") == "Starting" and r.get("since")]
        WAITING.labels(*key).set(max(0.0, (now or time.time()) - min(starting)) if starting else 0)
        for state, n in counts(records).items():
            JOBS.labels(*key, state).set(n)
        timed = self.timed.setdefault(key, set())
        for job in jobs:
            rec = records.get(job.hash, {})
            if rec.get("state") == "Succeeded" and job.hash not in timed and rec.get("created"):
                JOB_SECONDS.labels(job.phase, job.backbone).observe(rec["since"] - rec["created"])
                timed.add(job.hash)
        rows = results_table(jobs, results)
        baseline = {(r["backbone"], r["seed"], r["language"]): r["accuracy"] for r in rows
                    if r["intermediateTask"] == BASELINE}
        series = self.series.setdefault(key, set())
        for r in rows:
            labels = (*key, r["backbone"], r["intermediateTask"], str(r["seed"]), r["language"])
            ACCURACY.labels(*labels).set(r["accuracy"])
            series.add(labels)
            base = baseline.get((r["backbone"], r["seed"], r["language"]))
            if base is not None and r["intermediateTask"] != BASELINE:
                GAIN.labels(*labels).set(r["accuracy"] - base)
        if eta is not None:
            ETA.labels(*key).set(eta)
        if answer:
            self._answer(key, answer)

    def _answer(self, key: tuple, answer: dict) -> None:
        """The sequential design's progress (status.answer): what the dashboard's convergence panel plots."""
        ANSWER_TARGET.labels(*key).set(answer["targetHalfWidth"])
        ANSWER_SEEDS.labels(*key).set(answer["seeds"])
        ANSWER_LOOK.labels(*key).set(answer["look"])
        known = self.comparisons.setdefault(key, set())
        for comparison, c in (answer.get("comparisons") or {}).items():
            if c.get("halfWidth") is not None:
                ANSWER_HALF_WIDTH.labels(*key, comparison).set(c["halfWidth"])
            ANSWER_DECIDED.labels(*key, comparison).set(1 if c["decided"] else 0)
            known.add(comparison)

    def forget(self, namespace: str, experiment: str) -> None:
        """The experiment is gone: its series go too."""
        key = (experiment, namespace)
        self.phases.pop(key, None)
        self.timed.pop(key, None)
        for p in PHASES:
            EXPERIMENTS.labels(p).set(sum(1 for v in self.phases.values() if v == p))
        for state in STATES:
            _remove(JOBS, *key, state)
        for p in PHASES:
            _remove(PHASE, *key, p)
        _remove(WAITING, *key)
        for labels in self.series.pop(key, set()):
            _remove(ACCURACY, *labels)
            _remove(GAIN, *labels)
        _remove(ETA, *key)
        for gauge in (ANSWER_TARGET, ANSWER_SEEDS, ANSWER_LOOK):
            _remove(gauge, *key)
        for comparison in self.comparisons.pop(key, set()):
            _remove(ANSWER_HALF_WIDTH, *key, comparison)
            _remove(ANSWER_DECIDED, *key, comparison)


def _remove(metric, *labels) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
