"""MLflow tracking as both sides name it: one parent run per TransferExperiment, one nested run per job.

The executor (local or operator) and the trainer must find the same runs, after restarts and retries,
without anyone remembering a run id: every run carries tags that find it again. Pure functions of
plain dicts here, plus the find-or-create look-ups written against MlflowClient's methods (passed in,
so this package imports no MLflow). docs/tracking.md describes the hierarchy and its failure behaviour.
"""

from __future__ import annotations

import math

# Tags. The parent is found by its experiment key (a TransferExperiment's uid on a cluster, so a
# re-created experiment of the same name gets a new parent); a job's run by the key and its job hash.
KIND, KEY, PARENT = "stilts.kind", "stilts.experiment", "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
# What researchers filter by (`tags.backbone = 'moe' and tags.intermediateTask = 'qqp'`).
JOB_TAGS = ("backbone", "intermediateTask", "seed", "phase", "jobHash", "attempt")
# Credentials reach trainer pods as these variables (from spec.tracking.mlflow.credentialsSecret), which
# MLflow's client reads itself: never in job.json or a ConfigMap.
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param's value


def filter_string(tags: dict[str, str]) -> str:
    """An MLflow search filter matching every tag exactly."""
    return " and ".join(f"tags.`{k}` = '{_quoted(v)}'" for k, v in sorted(tags.items()))


def _quoted(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def parent_tags(key: str, name: str) -> dict[str, str]:
    return {KIND: "experiment", KEY: key, RUN_NAME: name}


def job_name(body: dict) -> str:
    """The job's name as `stilts status` shows it: backbone-task-sSEED-phase."""
    labels = body.get("labels") or {}
    seed = labels.get("seed", "")
    parts = [labels.get("backbone") or body["backbone"]["name"], labels.get("intermediateTask", ""),
             f"s{seed}" if seed else "", body["phase"]]
    return "-".join(p for p in parts if p)


def job_tags(body: dict, key: str, parent_run_id: str, attempt: str) -> dict[str, str]:
    """The tags of a job's run: what finds it again (key, jobHash) and what researchers filter by."""
    labels = body.get("labels") or {}
    tags = {KIND: "job", KEY: key, RUN_NAME: job_name(body), "phase": body["phase"],
            "backbone": labels.get("backbone") or body["backbone"]["name"],
            "intermediateTask": labels.get("intermediateTask", ""), "seed": labels.get("seed", str(body.get("seed"))),
            "jobHash": body.get("jobHash", ""), "attempt": str(attempt)}
    if parent_run_id:
        tags[PARENT] = parent_run_id
    return tags


def job_params(body: dict) -> dict[str, str]:
    """A job.json's settings as flat params (hyperparameters.learningRate, backbone.moe.experts, ...):
    what of the job defines its result, not where it runs (paths, ports and tracking are left out)."""
    wanted = {k: body[k] for k in ("phase", "task", "seed", "jobHash", "dataSource", "languages", "backbone",
                                   "hyperparameters", "deepspeed", "mlmMix", "syntheticWorld") if k in body}
    return {k: _param(v) for k, v in _flatten(wanted).items() if v is not None}


def _flatten(node: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _param(value) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text[:PARAM_VALUE_LIMIT]


def fresh(points: list[tuple[str, float, int]], logged: dict[str, int]) -> list[tuple[str, float, int]]:
    """The (key, value, step) points not yet in the run: a resumed attempt trains again the steps after
    its checkpoint, and the points an earlier attempt logged for them stay the ones shown."""
    return [p for p in points if p[2] > logged.get(p[0], -1)]


def oldest(runs: list) -> object | None:
    """The one run that counts among several with the same tags (two creators raced): the first made."""
    return min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id), default=None)


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The MLflow experiment's id, created if missing (a concurrent creator wins: look again).
    `artifact_location`: where a local store keeps artifacts (a server decides for itself)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # noqa: BLE001 - another process created it first; anything else fails the look-up below
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _find(client, experiment_id: str, tags: dict) -> list:
    return list(client.search_runs([experiment_id], filter_string(tags), max_results=50))


def ensure_parent(client, experiment_id: str, key: str, name: str) -> str:
    """The experiment's parent run, created once: found by its key; when two creators race, the oldest
    stays and the others delete their own, so every job nests under the same one."""
    wanted = {KIND: "experiment", KEY: key}
    found = oldest(_find(client, experiment_id, wanted))
    if found is not None:
        return found.info.run_id
    mine = client.create_run(experiment_id, tags=parent_tags(key, name), run_name=name).info.run_id
    first = oldest(_find(client, experiment_id, wanted))
    if first is not None and first.info.run_id != mine:
        client.delete_run(mine)
        return first.info.run_id
    return mine


def ensure_job_run(client, experiment_id: str, tags: dict[str, str]) -> tuple[str, bool]:
    """(run id, created) of a job's run: the one an earlier attempt made (same key and job hash), or a
    new one. Attempts of a job never overlap, so no two create it at once."""
    found = oldest(_find(client, experiment_id, {KIND: "job", KEY: tags[KEY], "jobHash": tags["jobHash"]}))
    if found is not None:
        return found.info.run_id, False
    return client.create_run(experiment_id, tags=tags, run_name=tags[RUN_NAME]).info.run_id, True


def report_metrics(report: dict) -> dict[str, float]:
    """A report's answer as the parent run's metrics: each dense-vs-MoE comparison's estimate and
    interval (average over languages, points), whether it is decided, and with a sequential design the
    seeds used and the cost."""
    out: dict[str, float] = {"runs": report.get("runs", 0)}
    for key, result in (report.get("interaction") or {}).items():
        paired = ((result.get("languages") or {}).get("avg") or {}).get("paired") or {}
        out.update(_figures(f"interaction/{key}", paired, decided=paired.get("claimed")))
    answer = report.get("answer") or {}
    for key, c in (answer.get("comparisons") or {}).items():
        out.update(_figures(f"answer/{key}", c, decided=c.get("decided")))
        if c.get("halfWidth") is not None:
            out[f"answer/{key}/halfWidth"] = c["halfWidth"]
    if answer:
        out["answer/seeds"], out["answer/looks"] = answer.get("seeds", 0), answer.get("look", 0)
    for k, v in (answer.get("cost") or {}).items():
        if isinstance(v, (int, float)):
            out[f"answer/cost/{k}"] = v
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _figures(prefix: str, c: dict, decided) -> dict:
    out = {f"{prefix}/{k}": c.get(k) for k in ("mean", "low", "high")}
    if decided is not None:
        out[f"{prefix}/decided"] = 1.0 if decided else 0.0
    return out
