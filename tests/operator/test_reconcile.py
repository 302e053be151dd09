"""The scheduler's decisions and the manifests as pure functions: no cluster."""

import json

import pytest

from stilts import manifests
from stilts.backends import pytorchjob
from stilts.plan import plan
from stilts.reconcile import Observed, Policy, reconcile
from stilts.spec import dump_spec, parse_spec

SPEC = {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1], "maxConcurrentJobs": 2,
        "retries": {"limit": 2, "backoffSeconds": 10},
        "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]}


def name(job_hash, attempt):
    return f"{job_hash}-{attempt}"


def setup(**changes):
    spec = parse_spec({**SPEC, **changes})
    return spec, plan(spec)


def step(spec, jobs, records, observed, now, **kw):
    return reconcile(jobs, records, observed, now, Policy.of(spec), name, **kw)


def summary(job, **extra):
    return json.dumps({"phase": job.phase, "jobHash": job.hash, **extra})


def succeeded(jobs, records, **extra):
    """Observed: every active child succeeded with a valid summary."""
    by_hash = {j.hash: j for j in jobs}
    return {name(h, r["attempts"]): Observed("Succeeded", summary=summary(
        by_hash[h], **(extra if by_hash[h].phase == "evaluate" else {})))
        for h, r in records.items() if r["state"] in ("Starting", "Running")}


def test_creates_roots_first_then_children_within_the_bound():
    spec, jobs = setup()
    d = step(spec, jobs, {}, {}, 0)
    assert [j.phase for j, _ in d.create] == ["pretrain"]
    first = name(d.create[0][0].hash, 1)
    d2 = step(spec, jobs, d.records, {first: Observed("Running")}, 1)
    assert d2.create == [] and d2.records[jobs[0].hash]["state"] == "Running", "a running child: nothing new"
    d3 = step(spec, jobs, d.records, succeeded(jobs, d.records), 2)
    assert len(d3.create) == 2, "bounded by maxConcurrentJobs"


def test_replay_is_idempotent():
    spec, jobs = setup()
    d = step(spec, jobs, {}, {}, 0)
    observed = succeeded(jobs, d.records)
    a = step(spec, jobs, d.records, observed, 5)
    b = step(spec, jobs, d.records, observed, 5)
    assert [(j.hash, n) for j, n in a.create] == [(j.hash, n) for j, n in b.create]
    assert a.records == b.records


def test_failures_back_off_exponentially_then_fail_and_block_descendants():
    spec, jobs = setup(maxConcurrentJobs=1, baseline=False)
    records = step(spec, jobs, {}, {}, 0).records
    pretrain = jobs[0]
    times, now = [], 0.0
    for attempt in (1, 2, 3):
        child = name(pretrain.hash, attempt)
        d = step(spec, jobs, records, {child: Observed("Failed", reason="Exit1", message="boom")}, now)
        assert d.delete == [child]
        records = d.records
        rec = records[pretrain.hash]
        if attempt <= 2:
            assert rec["state"] == "Backoff"
            times.append(rec["retryAfter"] - now)
            assert step(spec, jobs, records, {}, now + 1).create == [], "not before the backoff"
            now = rec["retryAfter"]
            d = step(spec, jobs, records, {}, now)
            assert [(j.hash, n) for j, n in d.create] == [(pretrain.hash, attempt + 1)]
            records = d.records
        else:
            assert rec["state"] == "Failed" and rec["message"] == "boom" and rec["reason"] == "Exit1"
    assert times == [10, 20]
    assert all(r["state"] == "Blocked" for h, r in records.items() if h != pretrain.hash)


def test_a_permanent_failure_is_not_retried():
    spec, jobs = setup()
    records = step(spec, jobs, {}, {}, 0).records
    child = name(jobs[0].hash, 1)
    d = step(spec, jobs, records, {child: Observed("Failed", permanent=True, reason="BadInput",
                                                   message="stilts_trainer: error: field 'task': unknown")}, 1)
    rec = d.records[jobs[0].hash]
    assert rec["state"] == "Failed" and rec["attempts"] == 1 and "field 'task'" in rec["message"]
    assert any(reason == "JobFailed" and "permanent" in message for _, reason, message in d.events)


def test_a_preempted_attempt_is_retried_without_spending_the_retry_budget_backing_off_when_in_a_row():
    """The first preemption resumes at once; more in a row wait backoffSeconds, doubling (a pod the kubelet
    evicts for its own memory would otherwise come straight back to the same fate)."""
    spec, jobs = setup(retries={"limit": 0, "backoffSeconds": 600})
    records, pretrain = step(spec, jobs, {}, {}, 0).records, jobs[0]
    now = 0.0
    for attempt, delay in ((1, 0), (2, 600), (3, 1200)):  # preempted three times with no retries allowed
        child = name(pretrain.hash, attempt)
        now += 1
        d = step(spec, jobs, records, {child: Observed("Failed", preempted=True, reason="Preempted")}, now)
        rec = d.records[pretrain.hash]
        assert (rec["state"], rec["retryAfter"] - now, rec["preemptions"]) == ("Backoff", delay, attempt)
        assert any(reason == "JobPreempted" for _, reason, _ in d.events)
        fenced = step(spec, jobs, d.records, {child: Observed("Terminating")}, now + delay)
        assert fenced.create == [] and fenced.delete == [child], "its pods go first"
        if delay:
            assert step(spec, jobs, d.records, {}, now + delay - 1).create == [], "not before its delay"
        now += delay
        d = step(spec, jobs, d.records, {}, now)
        assert [(j.hash, n) for j, n in d.create] == [(pretrain.hash, attempt + 1)]
        records = d.records
    d = step(spec, jobs, records, {name(pretrain.hash, 4): Observed("Failed", reason="Exit1", message="x")}, 9)
    assert d.records[pretrain.hash]["state"] == "Failed", "a real failure still meets the limit of 0 retries"
    bad = step(spec, jobs, records, {name(pretrain.hash, 4): Observed("Failed", permanent=True, preempted=True,
                                                                      reason="BadInput")}, 9)
    assert bad.records[pretrain.hash]["state"] == "Failed", "bad input is never retried"


def test_every_attempts_wall_time_adds_to_the_jobs():
    """What the answer cost counts retries and preemptions, not only the attempt that succeeded."""
    spec, jobs = setup(retries={"limit": 2, "backoffSeconds": 0})
    records, pretrain = step(spec, jobs, {}, {}, 0).records, jobs[0]
    records = step(spec, jobs, records, {name(pretrain.hash, 1): Observed("Failed", reason="Exit1")}, 100).records
    records = step(spec, jobs, records, {}, 100).records
    done = step(spec, jobs, records, succeeded(jobs, records), 160).records
    assert done[pretrain.hash]["seconds"] == 160.0


def test_preemptions_past_the_limit_count_as_failures_and_say_so():
    spec, jobs = setup(retries={"limit": 1, "backoffSeconds": 0, "preemptionLimit": 2})
    records, pretrain = step(spec, jobs, {}, {}, 0).records, jobs[0]
    for attempt in (1, 2, 3, 4):
        d = step(spec, jobs, records, {name(pretrain.hash, attempt): Observed("Failed", preempted=True,
                                                                              reason="TerminationByKubelet")}, attempt)
        rec = d.records[pretrain.hash]
        records = step(spec, jobs, d.records, {}, attempt).records
        if attempt <= 2:
            assert rec["preemptions"] == attempt and rec["state"] == "Backoff"
        elif attempt == 3:
            assert rec["state"] == "Backoff" and rec["reason"] == "PreemptionLimit", "the third spends the one retry"
            assert "past spec.retries.preemptionLimit (2)" in rec["message"] and "TerminationByKubelet" in rec["message"]
        else:
            assert rec["state"] == "Failed" and rec["reason"] == "PreemptionLimit", "the fourth fails the job"


def test_a_disruption_excuses_only_the_pods_it_took():
    """Counted per pod, not per attempt: a pod seen going away makes the attempt's failure a preemption
    when that pod is what failed (or nothing is left to tell), not when its replacement crashed."""
    spec, jobs = setup(retries={"limit": 3, "backoffSeconds": 0})
    records, pretrain = step(spec, jobs, {}, {}, 0).records, jobs[0]
    child = name(pretrain.hash, 1)
    running = step(spec, jobs, records, {child: Observed("Running", preempted=True, disrupted=("pod-a",))}, 1)
    assert running.records[pretrain.hash]["disruptedPods"] == ["pod-a"]
    crashed = step(spec, jobs, running.records, {child: Observed("Failed", reason="Exit1", failing=("pod-b",))}, 2)
    rec = crashed.records[pretrain.hash]
    assert rec["state"] == "Backoff" and rec.get("preemptions", 0) == 0, "its replacement's crash is a failure"
    gone = step(spec, jobs, running.records, {child: Observed("Failed", reason="Failed")}, 2)
    assert gone.records[pretrain.hash]["preemptions"] == 1, "the disrupted pod left nothing else to read"
    own = step(spec, jobs, running.records, {child: Observed("Failed", reason="Exit137", failing=("pod-a",))}, 2)
    assert own.records[pretrain.hash]["preemptions"] == 1
    later = step(spec, jobs, gone.records, {}, 3)
    assert "disruptedPods" not in later.records[pretrain.hash], "the next attempt starts with a clean slate"


def test_pods_replaced_in_place_count_towards_the_preemption_limit():
    """Trainer v2's runtime replaces a preempted pod in place: the operator never sees the attempt fail,
    so it counts the replaced pods, and past the limit fails the attempt itself."""
    spec, jobs = setup(retries={"limit": 0, "backoffSeconds": 0, "preemptionLimit": 2})
    records, pretrain = step(spec, jobs, {}, {}, 0).records, jobs[0]
    child = name(pretrain.hash, 1)
    d = step(spec, jobs, records, {child: Observed("Running", replaced=2)}, 1)
    assert d.records[pretrain.hash]["state"] == "Running" and d.delete == []
    d = step(spec, jobs, d.records, {child: Observed("Running", replaced=3)}, 2)
    rec = d.records[pretrain.hash]
    assert rec["state"] == "Failed" and rec["reason"] == "PreemptionLimit" and d.delete == [child]
    assert "3 pods replaced in place" in rec["message"]


def test_success_needs_a_valid_summary_of_that_job():
    spec, jobs = setup()
    records = step(spec, jobs, {}, {}, 0).records
    child = name(jobs[0].hash, 1)
    for bad in ("", "not json", json.dumps({"phase": "pretrain", "jobHash": "someone-else"}),
                json.dumps({"phase": "evaluate", "jobHash": jobs[0].hash, "test": {"en": "high"}}),
                json.dumps({"phase": "evaluate", "jobHash": jobs[0].hash, "test": {f"x{i}": 0.5 for i in range(300)}})):
        d = step(spec, jobs, records, {child: Observed("Succeeded", summary=bad)}, 1)
        rec = d.records[jobs[0].hash]
        assert rec["state"] == "Backoff" and rec["reason"] == "InvalidSummary", bad
        assert d.results == {}


def test_success_is_remembered_when_the_child_is_gone_and_results_come_from_the_summary():
    spec, jobs = setup()
    records, now, results = {}, 0, {}
    for _ in range(10):
        d = step(spec, jobs, records, succeeded(jobs, records, test={"en": 0.8}), now)
        records, now = d.records, now + 1
        results.update(d.results)
    assert all(r["state"] == "Succeeded" for r in records.values())
    again = step(spec, jobs, records, {}, now)  # every child deleted (TTL): nothing reruns
    assert again.create == [] and again.records == records
    evaluates = {j.hash for j in jobs if j.phase == "evaluate"}
    assert {h for h, r in results.items() if "test" in r} == evaluates


def test_child_lost_while_running_is_recreated_under_the_same_name():
    spec, jobs = setup()
    d = step(spec, jobs, {}, {}, 0)
    d2 = step(spec, jobs, d.records, {}, 1)
    assert [(j.hash, n) for j, n in d2.create] == [(j.hash, n) for j, n in d.create]


def test_a_job_that_cannot_start_fails_its_attempt_at_the_deadline_with_the_reason():
    spec, jobs = setup(startDeadlineSeconds=60)
    records = step(spec, jobs, {}, {}, 0).records
    child = name(jobs[0].hash, 1)
    waiting = Observed("Pending", reason="Unschedulable", message="0/3 nodes: insufficient nvidia.com/gpu")
    d = step(spec, jobs, records, {child: waiting}, 30)
    rec = d.records[jobs[0].hash]
    assert rec["state"] == "Starting" and rec["reason"] == "Unschedulable" and d.requeue_after == 30
    d = step(spec, jobs, d.records, {child: waiting}, 61)
    rec = d.records[jobs[0].hash]
    assert rec["state"] == "Backoff" and rec["reason"] == "StartDeadlineExceeded" and d.delete == [child]
    assert "Unschedulable" in rec["message"] and "60s" in rec["message"]


def test_time_queued_does_not_count_against_the_deadline_nor_as_a_failure():
    spec, jobs = setup(startDeadlineSeconds=60)
    records = step(spec, jobs, {}, {}, 0).records
    child = name(jobs[0].hash, 1)
    for now in (10, 500, 5000):
        d = step(spec, jobs, records, {child: Observed("Queued", reason="Suspended")}, now)
        records = d.records
        assert records[jobs[0].hash]["state"] == "Queued" and not d.delete
    d = step(spec, jobs, records, {child: Observed("Pending")}, 5010)
    assert d.records[jobs[0].hash]["state"] == "Starting"
    d = step(spec, jobs, d.records, {child: Observed("Pending")}, 5050)
    assert d.records[jobs[0].hash]["state"] == "Starting", "the deadline counts from admission"


def test_queued_children_count_against_the_concurrency_bound():
    spec, jobs = setup(maxConcurrentJobs=2)
    records = step(spec, jobs, {}, {}, 0).records
    records = step(spec, jobs, records, succeeded(jobs, records), 1).records
    active = {h: r for h, r in records.items() if r["state"] == "Starting"}
    assert len(active) == 2
    queued = {name(h, r["attempts"]): Observed("Queued") for h, r in active.items()}
    d = step(spec, jobs, records, queued, 2)
    assert d.create == []


def test_the_next_attempt_waits_until_the_failed_attempts_pods_are_gone():
    spec, jobs = setup(retries={"limit": 3, "backoffSeconds": 0})
    records = step(spec, jobs, {}, {}, 0).records
    first = name(jobs[0].hash, 1)
    d = step(spec, jobs, records, {first: Observed("Failed", message="oom")}, 1)
    assert d.delete == [first] and d.create == []
    d = step(spec, jobs, d.records, {first: Observed("Terminating")}, 2)
    assert d.create == [] and d.requeue_after is not None, "pods of attempt 1 still there: no attempt 2"
    d = step(spec, jobs, d.records, {}, 3)
    assert [(j.hash, n) for j, n in d.create] == [(jobs[0].hash, 2)]


def test_rearm_restarts_failed_and_blocked_jobs_and_keeps_finished_ones():
    spec, jobs = setup(baseline=False, retries={"limit": 0, "backoffSeconds": 0})
    records = step(spec, jobs, {}, {}, 0).records
    records = step(spec, jobs, records, succeeded(jobs, records), 1).records  # pretrain done
    inter = next(j for j in jobs if j.phase == "intermediate")
    d = step(spec, jobs, records, {name(inter.hash, 1): Observed("Failed", permanent=True, reason="BadInput")}, 2)
    assert d.records[inter.hash]["state"] == "Failed"
    assert {r["state"] for h, r in d.records.items() if h not in (inter.hash, jobs[0].hash)} == {"Blocked"}
    d = step(spec, jobs, d.records, {}, 3, rearm=True)
    assert d.records[jobs[0].hash]["state"] == "Succeeded", "finished jobs are kept"
    assert [(j.hash, n) for j, n in d.create] == [(inter.hash, 2)], "a new attempt, under a new name"
    # The retry budget starts over: with limit 0, the re-armed attempt may fail once more for good.
    d = step(spec, jobs, d.records, {name(inter.hash, 2): Observed("Failed", reason="Exit1")}, 4)
    assert d.records[inter.hash]["state"] == "Failed" and d.records[inter.hash]["attempts"] == 2


@pytest.mark.parametrize("conditions, pods, expected", [
    ([{"type": "Created", "status": "True"}],
     [{"metadata": {"labels": {"training.kubeflow.org/replica-type": t}}, "status": {"phase": "Running"}}
      for t in ("master", "worker")], "Running"),
    ([{"type": "Created", "status": "True"}], [{"status": {"phase": "Pending"}}], "Pending"),
    ([{"type": "Suspended", "status": "True"}], [], "Queued"),
    ([{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}], [], "Succeeded"),
    ([{"type": "Running", "status": "True"}, {"type": "Failed", "status": "True", "message": "m"}], [], "Failed"),
])
def test_pytorchjob_states(conditions, pods, expected):
    child = {"status": {"conditions": conditions}, "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1},
                                                                                   "Worker": {"replicas": 1}}}}
    assert pytorchjob.observe(child, pods).state == expected


def _pod(master, phase, terminated=None, waiting=None, scheduled=True, uid="", created=""):
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {"running": {}}
    labels = {"training.kubeflow.org/replica-type": "master" if master else "worker",
              "training.kubeflow.org/replica-index": "0"}
    conditions = [] if scheduled else [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/2 nodes are available"}]
    return {"metadata": {"labels": labels, "uid": uid or f"{'m' if master else 'w'}-{phase}",
                         "creationTimestamp": created},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"name": "pytorch", "state": state}]}}


def test_pytorchjob_outcomes_read_the_leader_and_exit_codes():
    ok = {"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    seen = pytorchjob.observe(ok, [_pod(False, "Succeeded", {"exitCode": 0, "message": "worker"}),
                                   _pod(True, "Succeeded", {"exitCode": 0, "message": '{"jobHash": "x"}'})])
    assert seen.summary == '{"jobHash": "x"}'
    bad = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "PyTorchJob failed"}]}}
    seen = pytorchjob.observe(bad, [_pod(True, "Failed", {"exitCode": 2, "message": "stilts_trainer: error: field"})])
    assert seen.permanent and seen.reason == "BadInput" and seen.message == "stilts_trainer: error: field"
    seen = pytorchjob.observe(bad, [_pod(True, "Failed", {"exitCode": 137, "message": ""})])
    assert not seen.permanent and seen.reason == "Exit137" and seen.message == "PyTorchJob failed"
    # torchrun's other ranks fail after a preempted one: the preemption is what the attempt reports.
    seen = pytorchjob.observe(bad, [_pod(True, "Failed", {"exitCode": 1}), _pod(False, "Failed", {"exitCode": 3})])
    assert seen.preempted and not seen.permanent and seen.reason == "Preempted"
    # A crash that came first decides, though its peers exited 3 when their controller stopped them after it.
    crashed = _pod(True, "Failed", {"exitCode": 1, "finishedAt": "2026-01-01T00:00:01Z"})
    stopped = _pod(False, "Failed", {"exitCode": 3, "finishedAt": "2026-01-01T00:00:09Z"})
    seen = pytorchjob.observe(bad, [crashed, stopped])
    assert not seen.preempted and seen.reason == "Exit1"
    stopped["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = "2026-01-01T00:00:00Z"
    assert pytorchjob.observe(bad, [crashed, stopped]).preempted, "a preemption that came first is one"
    # A pod replaced in place after its preemption is history: its successor's crash is what failed.
    first = _pod(True, "Failed", {"exitCode": 3}, uid="m-1", created="2026-01-01T00:00:00Z")
    second = _pod(True, "Failed", {"exitCode": 1, "message": "boom"}, uid="m-2", created="2026-01-01T00:05:00Z")
    seen = pytorchjob.observe(bad, [second, first])
    assert not seen.preempted and seen.reason == "Exit1" and seen.failing == ("m-2",) and seen.replaced == 1
    # A pod deleted under a running child before its trainer ended (an eviction whose exit code never
    # reached the API), then replaced in place: a preemption, counted; a crashed one replaced is not.
    running = {"status": {"conditions": [{"type": "Running", "status": "True"}]}}
    evicted = _pod(True, "Running", uid="m-1", created="2026-01-01T00:00:00Z")
    evicted["metadata"]["deletionTimestamp"] = "2026-01-01T00:04:00Z"
    successor = _pod(True, "Running", uid="m-2", created="2026-01-01T00:05:00Z")
    assert pytorchjob.observe(running, [successor, evicted]).replaced == 1
    crashed = _pod(True, "Failed", {"exitCode": 1}, uid="m-1", created="2026-01-01T00:00:00Z")
    crashed["metadata"]["deletionTimestamp"] = "2026-01-01T00:04:00Z"
    assert pytorchjob.observe(running, [successor, crashed]).replaced == 0
    # A pod Kubernetes took away (the pod GC after a node was lost): SIGKILL, no message, a disruption.
    gone = _pod(True, "Failed", {"exitCode": 137})
    gone["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                                         "message": "PodGC: node no longer exists"})
    seen = pytorchjob.observe(bad, [gone])
    assert seen.preempted and seen.reason == "DeletionByPodGC" and "node no longer exists" in seen.message
    waiting = {"status": {"conditions": [{"type": "Created", "status": "True"}]},
               "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1}}}}
    seen = pytorchjob.observe(waiting, [_pod(True, "Pending", scheduled=False)])
    assert (seen.state, seen.reason) == ("Pending", "Unschedulable")
    seen = pytorchjob.observe(waiting, [_pod(True, "Pending", waiting={"reason": "ImagePullBackOff", "message": "x"})])
    assert (seen.state, seen.reason) == ("Pending", "ImagePullBackOff")


def experiment_object(name="a-rather-long-experiment-name-for-names-x", uid="u-1", **changes):
    spec, _ = setup(**changes)
    return {"apiVersion": "stilts.dev/v1alpha1", "kind": "TransferExperiment",
            "metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": dump_spec(spec)}


def test_child_names_are_deterministic_valid_short_and_unique_per_experiment():
    a = manifests.prefix(experiment_object("paper-replication-dense-vs-moe-run1"), pytorchjob.BACKEND.max_name)
    b = manifests.prefix(experiment_object("paper-replication-dense-vs-moe-run2"), pytorchjob.BACKEND.max_name)
    again = manifests.prefix(experiment_object("paper-replication-dense-vs-moe-run1", uid="u-2"), 52)
    assert len({a, b, again}) == 3, "same long prefix, same spec: names still differ (namespace, name, uid)"
    name_ = manifests.child_name(a, "0123456789abcdef", 100)
    assert name_ == manifests.child_name(a, "0123456789abcdef", 100)
    assert len(name_) <= pytorchjob.BACKEND.max_name and name_[0].isalpha() and name_.endswith("-0123456789-100")


def test_pytorchjob_manifest():
    exp = experiment_object(backbones=[{"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
                                        "workers": 2, "gpusPerWorker": 8,
                                        "moe": {"experts": 8, "expertParallelSize": 8}}],
                            hfTokenSecret="hf", scheduling={"nodeSelector": {"gpu": "h100"},
                                                            "tolerations": [{"key": "gpu", "operator": "Exists",
                                                                             "effect": "NoSchedule"}],
                                                            "priorityClassName": "research"},
                            training={"target": {"microBatchSize": 2}, "intermediate": {"microBatchSize": 2},
                                      "pretrain": {"microBatchSize": 4}})
    job = next(j for j in plan(parse_spec(exp["spec"])) if j.phase == "target")
    child = manifests.child_name(manifests.prefix(exp, 52), job.hash, 1)
    template = manifests.pod_template(exp, parse_spec(exp["spec"]), job, 1, child, "pytorch", "img:1")
    pj = pytorchjob.manifest(exp, job, 1, child, template, manifests.metadata(exp, child, job, 1))
    replicas = pj["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    assert pj["spec"]["nprocPerNode"] == "8" and "backoffLimit" not in pj["spec"]["runPolicy"]
    assert pj["spec"]["runPolicy"]["suspend"] is False
    pod = replicas["Worker"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["name"] == "pytorch" and c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert c["resources"]["requests"] == {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "8"}
    assert c["command"][:5] == ["python", "-m", "stilts_trainer.launch", "-m", "stilts_trainer"]
    # SIGTERM to SIGKILL: the spec's grace; torchrun hands its workers all but a margin of it.
    assert pod["terminationGracePeriodSeconds"] == 300
    assert {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": "270"} in c["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in c["env"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {v["name"] for v in pod["volumes"]} == {"workspace", "dshm", "job"}
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["priorityClassName"] == "research"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    labels = pj["metadata"]["labels"]
    assert labels["stilts.dev/experiment"] == exp["metadata"]["name"] and labels["stilts.dev/job-hash"] == job.hash
    assert labels["stilts.dev/experiment-uid"] == "u-1" and labels["stilts.dev/attempt"] == "1"
    assert pj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    body = json.loads(manifests.config_map(exp, job, 1, child)["data"]["job.json"])
    assert body["output"] == f"/workspace/{exp['metadata']['name']}/{job.hash}"
    assert body["parent"].endswith(job.parent)


def test_a_queue_name_labels_every_child_and_suspends_it_until_admitted():
    exp = experiment_object(scheduling={"queueName": "team-gpus"})
    job = plan(parse_spec(exp["spec"]))[0]
    meta = manifests.metadata(exp, "c", job, 1)
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpus"
    template = manifests.pod_template(exp, parse_spec(exp["spec"]), job, 1, "c", "pytorch", "img:1")
    pj = pytorchjob.manifest(exp, job, 1, "c", template, meta)
    assert pj["spec"]["runPolicy"]["suspend"] is True


def test_trainer_accepts_every_rendered_job_json(tmp_path):
    from stilts_trainer.job import parse
    exp = experiment_object()
    for job in plan(parse_spec(exp["spec"])):
        body = json.loads(manifests.config_map(exp, job, 1, "c")["data"]["job.json"])
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
