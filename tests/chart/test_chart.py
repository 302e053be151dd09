"""The chart with the real helm: lint, render, what it grants, what the dashboard asks for."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

from .rbac_from_code import KOPF_OWN, required

CHART = REPO / "charts" / "stilts"
HELM = str(Path(sys.executable).parent / "helm")
VARIANTS = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "monitors": ["--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
                 "--set", "serviceMonitor.labels.release=kps"],
    "no-dashboard": ["--set", "dashboard.enabled=false", "--set", "serviceAccount.create=false"],
    "trainjob": ["--set", "jobBackend=trainjob", "--set", "podMonitor.enabled=true"],
    "alerts": ["--set", "prometheusRule.enabled=true", "--set", "dashboard.namespace=monitoring"],
    "policy": ["--set", "policy.allowedImagePrefixes={registry.example.com/ml/}", "--set",
               "trainerImage.repository=registry.example.com/ml/stilts-trainer", "--set", "global.imageRegistry=x"],
}


def helm(*args) -> str:
    result = subprocess.run([HELM, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(variant: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(helm("template", "stilts", str(CHART), "--namespace", "stilts",
                                               *VARIANTS[variant])) if d]


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_and_render(variant):
    helm("lint", "--strict", str(CHART), *VARIANTS[variant])
    kinds = sorted(d["kind"] for d in render(variant))
    assert "Deployment" in kinds
    if variant == "namespaced":  # a Role per namespace; cluster scope only for kopf's CRD discovery (and the
        # aggregated edit/view roles, which grant users, not the operator)
        assert kinds.count("Role") == 2 and kinds.count("ClusterRole") == 3
    if variant == "monitors":
        assert {"ServiceMonitor", "PodMonitor"} <= set(kinds)
    if variant == "no-dashboard":
        assert "ConfigMap" not in kinds and "ServiceAccount" not in kinds
    assert "CustomResourceDefinition" in kinds, "the CRD is a template: helm upgrade updates it"


def test_bad_values_are_refused_by_the_schema():
    result = subprocess.run([HELM, "lint", str(CHART), "--set", "logLevel=LOUD"], capture_output=True, text=True)
    assert result.returncode != 0 and "logLevel" in result.stdout + result.stderr


def test_chart_crd_is_identical_to_crds():
    assert (CHART / "files" / "crd.yaml").read_text() == \
        (REPO / "crds" / "stilts.dev_transferexperiments.yaml").read_text()


# Granted for the API server's OwnerReferencesPermission admission (children set blockOwnerDeletion), not
# for a call of the operator's own.
FOR_OWNER_REFERENCES = {("stilts.dev", "transferexperiments/finalizers", "update")}


@pytest.mark.parametrize("variant, backend", [("default", "pytorchjob"), ("namespaced", "pytorchjob"),
                                              ("trainjob", "trainjob")])
def test_rbac_grants_exactly_what_the_operator_calls(variant, backend):
    docs = render(variant)
    kind = "Role" if variant == "namespaced" else "ClusterRole"
    discovery = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-discovery"))
    roles = [d for d in docs if d["kind"] == kind and d is not discovery
             and not d["metadata"]["name"].endswith(("-edit", "-view"))]
    assert roles
    for role in roles:
        granted = {(g, r, v) for rule in role["rules"] + discovery["rules"] for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        assert not any("*" in x for t in granted for x in t), "no wildcards"
        needed = required(backend) | KOPF_OWN | FOR_OWNER_REFERENCES
        assert needed - granted == set(), f"missing: {needed - granted}"
        assert granted - needed == set(), f"granted but never used: {granted - needed}"
        assert not any(r == "secrets" for _, r, _ in granted), "the operator reads no Secrets"


def test_operator_pod_is_restricted():
    deployment = next(d for d in render("default") if d["kind"] == "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "Recreate" and deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = pod["containers"][0]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert {p["name"] for p in c["ports"]} == {"metrics", "health"}


def test_namespaced_mode_passes_the_namespaces_to_the_operator():
    deployment = next(d for d in render("namespaced") if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["--namespace=team-a",
                                                                              "--namespace=team-b"]


def test_values_are_documented_line_by_line():
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^\s*[a-zA-Z]\w*:", line)]
    assert len(keys) > 25
    for i in keys:
        assert lines[i - 1].strip().startswith("#"), f"values.yaml line {i + 1} has no comment: {lines[i]}"


def test_notes_tell_the_user_what_to_do_next():
    notes = helm("install", "stilts", str(CHART), "--dry-run=client", "--namespace", "stilts")
    assert "kubectl apply -f examples/" in notes and "kubectl get tx" in notes and "Grafana" in notes
    assert "Kubeflow training operator" in notes and "ReadWriteMany" in notes


def exported_metric_names() -> set[str]:
    from prometheus_client import REGISTRY
    import stilts.metrics  # noqa: F401 - registers the operator's metrics
    from stilts_trainer.metrics import TrainerMetrics

    names = set()
    trainer = TrainerMetrics({k: "x" for k in ("experiment", "job_hash", "phase", "backbone", "task")})
    trainer.moe(0.1, {"expert_share": [1.0], "dropped_share": 0.0})
    for registry in (REGISTRY, trainer.registry):
        for family in registry.collect():
            names |= {s.name for s in family.samples} | {family.name}
            if family.type == "histogram":  # a labelled histogram has no samples before its first observation
                names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    return names


def test_every_dashboard_metric_is_exported():
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    used = {m for e in exprs for m in re.findall(r"\bstilts_[a-z_]+", e)}
    assert len(used) >= 10
    missing = used - exported_metric_names()
    assert not missing, f"dashboard queries metrics nobody exports: {missing}"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("accuracy", "gain", "jobs", "loss", "tokens", "expert", "fail"):
        assert topic in titles
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"experiment", "backbone"}


def test_dockerfiles_pass_hadolint_and_keep_tests_out_of_the_context():
    hadolint = str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "Dockerfile.trainer", "Dockerfile.operator"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[0] == "*" or "*" in ignore, "everything is excluded unless listed"
    assert not any(line.startswith("!tests") or line.startswith("!.venv") for line in ignore)
    trainer = (REPO / "Dockerfile.trainer").read_text()
    assert "USER 1000" in trainer and "torch==" not in trainer  # versions come from requirements.txt
    assert "torch" not in (REPO / "Dockerfile.operator").read_text().split("grep -E")[1].split("'")[1]


def test_the_dashboard_lands_where_grafanas_sidecar_looks():
    dashboard = next(d for d in render("alerts") if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith(
        "-dashboard"))
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "stilts"
    assert json.loads(dashboard["data"]["stilts.json"])["title"]


def test_researchers_get_tx_through_the_built_in_roles():
    roles = {d["metadata"]["name"]: d for d in render("default") if d["kind"] == "ClusterRole"}
    edit, view = roles["stilts-edit"], roles["stilts-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "create" in edit["rules"][0]["verbs"] and "delete" in edit["rules"][0]["verbs"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert set(view["rules"][0]["verbs"]) == {"get", "list", "watch"}


def test_alert_rules_pass_promtool(tmp_path):
    import shutil
    promtool = shutil.which("promtool")
    if not promtool:
        message = "promtool not installed (make test installs Debian's prometheus package when run as root)"
        if __import__("os").environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    rule = next(d for d in render("alerts") if d["kind"] == "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == {
        "StiltsJobFailed", "StiltsJobStuckPending", "StiltsExperimentFailed"}
    metrics = {m for g in rule["spec"]["groups"] for r in g["rules"] for m in re.findall(r"\bstilts_[a-z_]+", r["expr"])}
    assert metrics <= exported_metric_names(), metrics - exported_metric_names()


def test_the_operator_gets_the_trainer_image_and_the_policy():
    deployment = next(d for d in render("policy") if d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STILTS_TRAINER_IMAGE"] == "registry.example.com/ml/stilts-trainer:0.1.0"
    assert json.loads(env["STILTS_POLICY"])["allowedImagePrefixes"] == ["registry.example.com/ml/"]


def test_the_trainjob_grace_period_has_one_default_and_one_shutdown_formula():
    """The grace period's default is spec.py's (the chart's value must agree), and torchrun's shutdown
    timeout is computed in one place (stilts_contract.names.shutdown_timeout): the runtime does not compute
    it, the operator gets the runtime's grace and writes the timeout into each TrainJob."""
    from stilts import manifests
    from stilts.backends import trainjob
    from stilts.plan import plan
    from stilts.spec import TERMINATION_GRACE_SECONDS, parse_spec
    from stilts_contract.names import shutdown_timeout

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["trainjobTerminationGracePeriodSeconds"] == TERMINATION_GRACE_SECONDS
    docs = render("trainjob")
    runtime = next(d for d in docs if d["kind"] == "ClusterTrainingRuntime")
    assert "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" not in json.dumps(runtime)
    operator = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STILTS_TRAINJOB_GRACE_SECONDS"] == str(TERMINATION_GRACE_SECONDS)
    spec = parse_spec({"dataSource": "synthetic", "seeds": [1], "intermediateTasks": [],
                       "backbones": [{"name": "d", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]})
    exp = {"metadata": {"name": "e", "namespace": "n", "uid": "u"}, "spec": {}}
    job = plan(spec)[-1]
    template = manifests.pod_template(exp, spec, job, 1, "c", trainjob.REPLICATED_JOB, "img")
    import os
    os.environ["STILTS_TRAINJOB_GRACE_SECONDS"] = "600"
    try:
        child = trainjob.manifest(exp, job, 1, "c", template, manifests.metadata(exp, "c", job, 1))
        assert {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(shutdown_timeout(600))} in \
            child["spec"]["trainer"]["env"]
        assert trainjob.unsupported(spec) == [], "a spec that leaves the grace out takes the runtime's"
        explicit = parse_spec({**json.loads(json.dumps(spec.model_dump(by_alias=True, exclude_none=True))),
                               "scheduling": {"terminationGracePeriodSeconds": 120}})
        assert "trainjobTerminationGracePeriodSeconds to 120" in trainjob.unsupported(explicit)[0]
    finally:
        del os.environ["STILTS_TRAINJOB_GRACE_SECONDS"]
