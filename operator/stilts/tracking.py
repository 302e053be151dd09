"""MLflow tracking of a local run (`stilts run --mlflow`): the experiment's parent run, made before any
job starts, and the report logged to it at the end (docs/tracking.md). On a cluster the trainer makes
the parent itself (manifests.tracking), so the operator needs no credentials.

A tracking server that is down costs the run a warning, never a failure: jobs still find or make the
parent by its key when the executor could not.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from stilts_contract import tracking as contract

from .spec import ExperimentSpec

log = logging.getLogger("stilts")

# The executor waits on the server where the trainer never does: one try per request, short.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
REPORT_FILES = ("report.json", "report.txt", "heatmap.png", "answer.png")
LOCAL_STORE = "mlflow.db"
ARTIFACTS = "mlflow-artifacts"


def local_settings(spec: ExperimentSpec, flag: str | None, root: Path, name: str) -> dict | None:
    """job.json's tracking block for a local run: `--mlflow URI` (bare: a sqlite store under the root,
    shared by the root's experiments), else the spec's server; None when neither asks for tracking."""
    given = spec.tracking.mlflow if spec.tracking else None
    if flag is None and given is None:
        return None
    if flag is None:
        uri = given.uri
    else:
        uri = flag or f"sqlite:///{root / LOCAL_STORE}"
    return {"uri": uri, "experimentName": given.experiment_name if given else "stilts",
            "parentKey": f"local/{name}"}


def artifact_location(uri: str, root: Path) -> str | None:
    """Where a local store's experiment keeps artifacts: beside the store, not MLflow's ./mlruns of
    whatever directory `stilts run` ran in. A server decides for itself."""
    return (root / ARTIFACTS).as_uri() if uri.startswith(("sqlite:", "file:")) else None


def spec_params(spec: ExperimentSpec) -> dict[str, str]:
    """What the parent run shows of the spec: the grid's axes."""
    seeds = spec.seeds or ([] if spec.answer else [1, 2, 3])
    return {"backbones": ",".join(f"{b.name}={b.model}:{b.architecture}" for b in spec.backbones),
            "intermediateTasks": ",".join(spec.intermediate_tasks), "baseline": str(spec.baseline),
            "languages": ",".join(spec.target.languages), "dataSource": spec.data_source,
            "seeds": ",".join(map(str, seeds)) if seeds else f"sequential, at most {spec.answer.max_seeds}"}


def client_for(uri: str):
    for variable, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def start_parent(settings: dict, spec: ExperimentSpec, name: str, root: Path) -> dict:
    """The settings with the parent run's id, once it exists; unchanged (jobs make it) when the server
    cannot be reached."""
    try:
        client = client_for(settings["uri"])
        experiment_id = contract.ensure_experiment(client, settings["experimentName"],
                                                   artifact_location(settings["uri"], root))
        run_id = contract.ensure_parent(client, experiment_id, settings["parentKey"], name)
        client.update_run(run_id, status="RUNNING")
        from mlflow.entities import Param

        client.log_batch(run_id, params=[Param(k, v) for k, v in spec_params(spec).items()])
    except Exception as err:  # noqa: BLE001 - tracking never stops a run
        log.warning("MLflow at %s: no parent run yet (%s); jobs will find or make it", settings["uri"],
                    str(err).splitlines()[0][:200] if str(err) else type(err).__name__)
        return settings
    return {**settings, "parentRunId": run_id}


def log_report(settings: dict, run_dir: Path, finished: bool) -> str:
    """The report's files as the parent's artifacts and its answer as metrics (step: runs reported, so
    logging the same report again adds nothing); the parent ends FINISHED with the grid. Returns a line
    to show, naming the run or why it was not logged."""
    try:
        client = client_for(settings["uri"])
        run_id = settings.get("parentRunId") or _find_parent(client, settings)
        for name in REPORT_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").is_file() else {}
        _log_figures(client, run_id, contract.report_metrics(report), int(report.get("runs", 0)))
        if finished:
            client.set_terminated(run_id, "FINISHED")
    except Exception as err:  # noqa: BLE001 - the report is on disk whatever the server does
        return f"MLflow: report not logged ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})"
    return f"MLflow: report logged to run {run_id} of experiment {settings['experimentName']!r} at {settings['uri']}"


def _find_parent(client, settings: dict) -> str:
    experiment_id = contract.ensure_experiment(client, settings["experimentName"])
    return contract.ensure_parent(client, experiment_id, settings["parentKey"], settings["parentKey"])


def _log_figures(client, run_id: str, figures: dict[str, float], step: int) -> None:
    if not figures or max((m.step for m in client.get_metric_history(run_id, "runs")), default=-1) >= step:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v in sorted(figures.items())]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
