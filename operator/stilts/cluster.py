"""What an experiment on a cluster looks like from outside the operator: its object, its plan
(recomputed from the spec), its job records and its results (the two ConfigMaps the operator keeps).
`stilts status`, `stilts report tx/NAME`, `stilts logs` and `stilts retry` read it; so do the tests."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from . import backends, manifests
from .plan import Job, plan
from .spec import GROUP, PLURAL, VERSION, ExperimentSpec, parse_spec


@dataclass
class ClusterExperiment:
    experiment: dict
    spec: ExperimentSpec
    jobs: list[Job]
    records: dict
    results: dict

    @property
    def name(self) -> str:
        return self.experiment["metadata"]["name"]


def api_client(kubeconfig: str | None = None, context: str | None = None):
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
    except config.ConfigException:
        config.load_incluster_config()
    return client.ApiClient()


def load(api, namespace: str, name: str, backend: str = "pytorchjob") -> ClusterExperiment:
    from kubernetes import client

    experiment = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    spec = parse_spec(experiment["spec"], f"{namespace}/{name}")
    status = experiment.get("status") or {}
    stem = manifests.prefix(experiment, backends.get(backend).max_name)
    jobs_store, results_store = manifests.store_names(stem)
    core = client.CoreV1Api(api)
    data = {}
    for key, store in (("jobs", status.get("jobsConfigMap") or jobs_store),
                       ("results", status.get("resultsConfigMap") or results_store)):
        try:
            data[key] = core.read_namespaced_config_map(store, namespace).data or {}
        except client.ApiException as err:
            if err.status != 404:
                raise
            data[key] = {}
    records = json.loads(data["jobs"].get("records", "{}"))
    results = {h: json.loads(v) for h, v in data["results"].items()}
    return ClusterExperiment(experiment, spec, plan(spec), records, results)


def retry(api, namespace: str, name: str) -> str:
    """Re-arm the experiment's failed jobs (and those they blocked); finished jobs are kept."""
    from kubernetes import client

    token = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": {manifests.RETRY_ANNOTATION: token}}})
    return token
