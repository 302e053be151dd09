"""`stilts tensorboard tx/NAME` without a cluster: the pod it makes (TensorBoard on the pod's own loopback, read-only,
owned by the experiment), its name, that it replaces or deletes only a pod the experiment owns, how it waits for the pod
to run, and Ctrl-C."""

import json
import re
from types import SimpleNamespace

import pytest
from kubernetes import client

from stilts import cli, tensorboard
from stilts.plan import plan
from stilts.spec import load_experiment
from tests.conftest import REPO

UID = "0f6c6a3e-uid-of-exp"


def seen(name: str = "exp", uid: str = UID):
    spec = load_experiment(str(REPO / "examples" / "demo.yaml")).spec
    experiment = {"apiVersion": "stilts.dev/v1alpha1", "kind": "TransferExperiment",
                  "metadata": {"name": name, "namespace": "team-a", "uid": uid}, "spec": {}}
    return SimpleNamespace(experiment=experiment, jobs=plan(spec), name=name, spec=spec)


def test_the_pod_serves_on_its_own_loopback_only_read_only_and_owned_by_the_experiment():
    s = seen()
    body = tensorboard.pod(s, "trainer:1")
    (container,) = body["spec"]["containers"]
    cmd = container["command"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1", "no unauthenticated server for the whole cluster"
    assert cmd[cmd.index("--port") + 1] == str(tensorboard.PORT)
    runs = dict(item.split(":", 1) for item in cmd[cmd.index("--logdir_spec") + 1].split(","))
    assert runs == {j.name: f"/workspace/exp/{j.hash}/tensorboard" for j in s.jobs if j.phase != "evaluate"
                    and j.phase != "prefetch"}
    assert body["metadata"]["name"] == "stilts-tensorboard-exp" and body["metadata"]["namespace"] == "team-a"
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("TransferExperiment", "exp", UID, False)
    assert body["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["volumeMounts"][0]["readOnly"] and body["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"]


def test_experiments_whose_names_share_a_long_prefix_get_a_pod_each():
    prefix = "dense-vs-moe-xlmr-large-paper-grid-five-seeds"  # 45 characters: more than a pod name has room for
    a, b = tensorboard.pod_name(prefix + "-a"), tensorboard.pod_name(prefix + "-b")
    assert a != b
    for name in (a, b, tensorboard.pod_name("x" * 253)):
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert tensorboard.pod_name("exp") == "stilts-tensorboard-exp"
    assert tensorboard.pod_name(prefix + "-a") == a, "the same name every time"


def as_api(body: dict, uid: str = "pod-uid-1", deleting: bool = False) -> dict:
    """A pod as the API server returns it."""
    out = json.loads(json.dumps(body))
    out["metadata"]["uid"] = uid
    if deleting:
        out["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return out


def test_ownership_is_the_experiments_uid_in_the_owner_references():
    mine = as_api(tensorboard.pod(seen(), "trainer:1"))
    other = as_api(tensorboard.pod(seen(uid="another-uid"), "trainer:1"))
    assert tensorboard.owned_by(mine, UID) and not tensorboard.owned_by(other, UID)
    assert not tensorboard.owned_by({"metadata": {"name": "x"}}, UID)
    assert "uid another-uid" in tensorboard.owner_text(other)


class FakeCore:
    """CoreV1Api as ensure_pod, delete_pod and wait_running use it: one pod name, a list of calls."""

    def __init__(self, pods: list[dict | None]):
        self.pods = list(pods)  # what successive reads return (the last one repeats)
        self.calls: list[tuple] = []

    def read_namespaced_pod(self, name, namespace, _preload_content=True):
        current = self.pods.pop(0) if len(self.pods) > 1 else self.pods[0]
        self.calls.append(("read", name))
        if current is None:
            raise client.ApiException(status=404)
        return SimpleNamespace(data=json.dumps(current).encode())

    def create_namespaced_pod(self, namespace, body):
        self.calls.append(("create", body["metadata"]["name"]))

    def delete_namespaced_pod(self, name, namespace, body=None, **kwargs):
        self.calls.append(("delete", name, body.preconditions.uid))


@pytest.fixture
def fake_core(monkeypatch):
    made = {}

    def install(pods):
        made["core"] = FakeCore(pods)
        monkeypatch.setattr(client, "CoreV1Api", lambda api=None: made["core"])
        monkeypatch.setattr(tensorboard.time, "sleep", lambda s: None)
        return made["core"]

    return install


def test_a_pod_of_that_name_that_the_experiment_does_not_own_is_never_replaced_or_deleted(fake_core):
    theirs = as_api(tensorboard.pod(seen(uid="another-uid"), "other:1"))
    core = fake_core([theirs])
    with pytest.raises(tensorboard.NotOwned, match="not exp's"):
        tensorboard.ensure_pod(None, seen(), "trainer:1")
    with pytest.raises(tensorboard.NotOwned):
        tensorboard.delete_pod(None, seen())
    assert all(call[0] == "read" for call in core.calls), core.calls


def test_its_own_pod_is_kept_when_it_serves_the_same_and_replaced_exactly_when_not(fake_core):
    s = seen()
    core = fake_core([as_api(tensorboard.pod(s, "trainer:1"))])
    assert tensorboard.ensure_pod(None, s, "trainer:1") == "stilts-tensorboard-exp"
    assert [c[0] for c in core.calls] == ["read"]

    older = as_api(tensorboard.pod(s, "trainer:1"), uid="old-pod")
    older["spec"]["containers"][0]["command"] = tensorboard.command("a:/x", 6006, "0.0.0.0")  # an older stilts
    core = fake_core([older, as_api(tensorboard.pod(s, "trainer:1"), uid="old-pod", deleting=True), None])
    tensorboard.ensure_pod(None, s, "trainer:1")
    assert core.calls == [("read", "stilts-tensorboard-exp"), ("delete", "stilts-tensorboard-exp", "old-pod"),
                          ("read", "stilts-tensorboard-exp"), ("read", "stilts-tensorboard-exp"),
                          ("create", "stilts-tensorboard-exp")]


def test_stop_deletes_its_own_pod(fake_core):
    core = fake_core([as_api(tensorboard.pod(seen(), "trainer:1"), uid="p1")])
    assert tensorboard.delete_pod(None, seen()) == "stilts-tensorboard-exp"
    assert core.calls[-1] == ("delete", "stilts-tensorboard-exp", "p1")
    fake_core([None])
    assert tensorboard.delete_pod(None, seen()) is None


def pod_status(**status) -> dict:
    return {"metadata": {"name": "p", "namespace": "n", "uid": "u"}, "status": status}


@pytest.mark.parametrize("status,expected", [
    ({"phase": "Running", "containerStatuses": [{"state": {"running": {"startedAt": "t"}}}]}, ("Running", "")),
    ({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]},
     ("Waiting", "ContainerCreating")),
    ({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image \"trainer:1\""}}}]},
     ("Waiting", "ImagePullBackOff (Back-off pulling image \"trainer:1\")")),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/3 nodes are available: 3 Insufficient memory."}]},
     ("Waiting", "Unschedulable (0/3 nodes are available: 3 Insufficient memory.)")),
    ({"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
     ("Waiting", "CrashLoopBackOff")),
    ({"phase": "Failed", "reason": "Evicted"}, ("Ended", "Failed: Evicted")),
    ({}, ("Waiting", "Pending")),
], ids=["running", "creating", "image", "unschedulable", "crashing", "evicted", "new"])
def test_the_state_of_the_pod_names_what_it_waits_for(status, expected):
    assert tensorboard.state(pod_status(**status)) == expected


def test_waiting_times_out_naming_the_reason(fake_core):
    fake_core([pod_status(phase="Pending", containerStatuses=[{"state": {"waiting": {"reason": "ImagePullBackOff"}}}])])
    said = []
    with pytest.raises(TimeoutError, match="not running after 0 s: ImagePullBackOff"):
        tensorboard.wait_running(None, "n", "p", timeout=0, say=said.append, poll=0)
    assert said == ["waiting for pod n/p: ImagePullBackOff"]
    fake_core([pod_status(phase="Pending"),
               pod_status(phase="Running", containerStatuses=[{"state": {"running": {}}}])])
    tensorboard.wait_running(None, "n", "p", timeout=60, say=said.append, poll=0)


def test_ctrl_c_stops_without_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cluster", interrupted)
    assert cli.main(["tensorboard", "tx/exp"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--stop" in err
