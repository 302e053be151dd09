"""The operator's decisions and manifests as pure functions: no cluster."""

import json

import pytest

from stilts import manifests
from stilts.plan import plan
from stilts.reconcile import Observed, job_condition, reconcile
from stilts.spec import dump_spec, parse_spec

SPEC = {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1], "maxConcurrentJobs": 2,
        "retries": {"limit": 2, "backoffSeconds": 10},
        "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]}


def setup(**changes):
    raw = {**SPEC, **changes}
    spec = parse_spec(raw)
    return dump_spec(spec), plan(spec)


def succeed(name, status, jobs, message=""):
    """Observed: every running child succeeded."""
    observed = {}
    for job in jobs:
        rec = status.get("jobs", {}).get(job.hash, {})
        if rec.get("state") == "Running":
            child = manifests.child_name(name, job.hash, rec["attempts"])
            observed[child] = Observed(child, "Succeeded", "", message)
    return observed


def test_creates_roots_first_then_children_within_the_bound():
    spec, jobs = setup()
    d = reconcile("exp", spec, jobs, {}, {}, now=0)
    assert [j.phase for j, _ in d.create] == ["pretrain"]
    child = manifests.child_name("exp", d.create[0][0].hash, 1)
    d2 = reconcile("exp", spec, jobs, {child: Observed(child, "Running")}, d.status, now=1)
    assert d2.create == [], "a running child: nothing new"
    d3 = reconcile("exp", spec, jobs, succeed("exp", d.status, jobs), d.status, now=2)
    assert len(d3.create) == 2 and d3.status["counts"]["Running"] == 2, "bounded by maxConcurrentJobs"


def test_replay_is_idempotent():
    spec, jobs = setup()
    d = reconcile("exp", spec, jobs, {}, {}, now=0)
    observed = succeed("exp", d.status, jobs)
    a = reconcile("exp", spec, jobs, observed, d.status, now=5)
    b = reconcile("exp", spec, jobs, observed, d.status, now=5)
    assert [(j.hash, n) for j, n in a.create] == [(j.hash, n) for j, n in b.create]
    assert a.status == b.status


def test_failures_back_off_exponentially_then_fail_and_block_descendants():
    spec, jobs = setup(maxConcurrentJobs=1, baseline=False)
    status = reconcile("exp", spec, jobs, {}, {}, now=0).status
    pretrain = jobs[0]
    times = []
    now = 0.0
    for attempt in (1, 2, 3):
        child = manifests.child_name("exp", pretrain.hash, attempt)
        d = reconcile("exp", spec, jobs, {child: Observed(child, "Failed", "boom")}, status, now=now)
        assert d.delete == [child]
        status = d.status
        rec = status["jobs"][pretrain.hash]
        if attempt <= 2:
            assert rec["state"] == "Backoff"
            times.append(rec["retryAfter"] - now)
            assert reconcile("exp", spec, jobs, {}, status, now=now + 1).create == [], "not before the backoff"
            now = rec["retryAfter"]
            d = reconcile("exp", spec, jobs, {}, status, now=now)
            assert [(j.hash, n) for j, n in d.create] == [(pretrain.hash, attempt + 1)]
            status = d.status
        else:
            assert rec["state"] == "Failed" and rec["message"] == "boom"
    assert times == [10, 20]
    assert status["phase"] == "Failed" and status["counts"]["Blocked"] == len(jobs) - 1


def test_success_is_remembered_when_the_child_is_gone_and_results_come_from_the_message():
    spec, jobs = setup()
    status = {}
    now = 0
    for _ in range(10):
        d = reconcile("exp", spec, jobs, succeed("exp", status, jobs, json.dumps({"test": {"en": 0.8}})), status,
                      now=now)
        status, now = d.status, now + 1
    assert status["phase"] == "Succeeded" and status["progress"] == f"{len(jobs)}/{len(jobs)}"
    again = reconcile("exp", spec, jobs, {}, status, now=now)  # every child deleted (TTL): nothing reruns
    assert again.create == [] and again.status["phase"] == "Succeeded"
    assert {(r["intermediateTask"], r["language"]) for r in status["results"]} == {("none", "en"), ("qqp", "en")}


def test_child_lost_while_running_is_recreated_under_the_same_name():
    spec, jobs = setup()
    d = reconcile("exp", spec, jobs, {}, {}, now=0)
    running = {j.hash: n for j, n in d.create}
    lost = {}
    d2 = reconcile("exp", spec, jobs, lost, d.status, now=1)
    assert [(j.hash, n) for j, n in d2.create] == list(running.items())


@pytest.mark.parametrize("conditions, expected", [
    ([{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}], "Running"),
    ([{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}], "Succeeded"),
    ([{"type": "Running", "status": "True"}, {"type": "Failed", "status": "True", "message": "m"}], "Failed"),
    ([], ""),
])
def test_job_condition(conditions, expected):
    assert job_condition({"status": {"conditions": conditions}})[0] == expected


def experiment_object(**changes):
    spec, _ = setup(**changes)
    return {"apiVersion": "stilts.dev/v1alpha1", "kind": "TransferExperiment",
            "metadata": {"name": "a-rather-long-experiment-name-for-names-x", "namespace": "ns", "uid": "u-1"},
            "spec": spec}


def test_child_names_are_deterministic_valid_and_short():
    name = manifests.child_name("a-rather-long-experiment-name-for-names-x", "0123456789abcdef", 12)
    assert name == manifests.child_name("a-rather-long-experiment-name-for-names-x", "0123456789abcdef", 12)
    assert len(name) + len("-worker-63") <= 63 and name[0].isalpha() and name.endswith("-0123456789ab-12")
    assert name != manifests.child_name("a-rather-long-experiment-name-for-names-x", "0123456789abcdef", 13)


def test_pytorchjob_manifest():
    exp = experiment_object(backbones=[{"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
                                        "workers": 2, "gpusPerWorker": 8,
                                        "moe": {"experts": 8, "expertParallelSize": 8}}],
                            hfTokenSecret="hf", scheduling={"nodeSelector": {"gpu": "h100"},
                                                            "tolerations": [{"key": "gpu", "operator": "Exists",
                                                                             "effect": "NoSchedule"}],
                                                            "priorityClassName": "research"})
    job = next(j for j in plan(parse_spec(exp["spec"])) if j.phase == "target")
    pj = manifests.pytorchjob(exp, job, 1)
    replicas = pj["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    assert pj["spec"]["nprocPerNode"] == "8" and pj["spec"]["runPolicy"]["backoffLimit"] == 0
    pod = replicas["Worker"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["name"] == "pytorch" and c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert c["command"][:3] == ["torchrun", "-m", "stilts_trainer"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in c["env"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {v["name"] for v in pod["volumes"]} == {"workspace", "dshm", "job"}
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["priorityClassName"] == "research"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    labels = pj["metadata"]["labels"]
    assert labels["stilts.dev/experiment"] == exp["metadata"]["name"] and labels["stilts.dev/job-hash"] == job.hash
    assert pj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    body = json.loads(manifests.config_map(exp, job, 1)["data"]["job.json"])
    assert body["output"] == f"/workspace/{exp['metadata']['name']}/{job.hash}"
    assert body["parent"].endswith(job.parent)


def test_trainer_accepts_every_rendered_job_json(tmp_path):
    from stilts_trainer.job import parse
    exp = experiment_object()
    for job in plan(parse_spec(exp["spec"])):
        body = json.loads(manifests.config_map(exp, job, 1)["data"]["job.json"])
        if body["parent"]:
            parent = tmp_path / job.parent
            parent.mkdir(exist_ok=True)
            (parent / "COMPLETE").write_text("{}")
            body["parent"] = str(parent)
        parse(body)


def test_claim_is_owned_only_when_not_retained():
    kept = manifests.claim(experiment_object())
    assert "ownerReferences" not in kept["metadata"] and kept["spec"]["accessModes"] == ["ReadWriteMany"]
    dropped = manifests.claim(experiment_object(storage={"retainOnDelete": False, "size": "1Ti"}))
    assert dropped["metadata"]["ownerReferences"][0]["uid"] == "u-1"
