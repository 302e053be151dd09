"""The operator's watch cache (operator/stilts/cache.py): events keep it current, and an uncached
LIST never overwrites what a newer event said."""

from stilts.cache import CHILDREN, PODS, Cache, slim
from stilts.manifests import LABEL_HASH, LABEL_UID


def obj(name, state="Running", uid="u1", job_hash="h1"):
    return {"metadata": {"name": name, "labels": {LABEL_UID: uid, LABEL_HASH: job_hash}, "resourceVersion": "1"},
            "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {"containers": []}}}}},
            "status": {"phase": state}}


def states(cache, kind=CHILDREN, uid="u1"):
    return {o["metadata"]["name"]: o["status"]["phase"] for o in cache.list(kind, uid)}


def test_events_add_update_and_delete_per_experiment():
    cache = Cache()
    cache.apply(CHILDREN, None, obj("a"))
    cache.apply(CHILDREN, "ADDED", obj("b", uid="u2"))
    cache.apply(CHILDREN, "MODIFIED", obj("a", "Succeeded"))
    assert states(cache) == {"a": "Succeeded"} and states(cache, uid="u2") == {"b": "Running"}
    cache.apply(CHILDREN, "DELETED", obj("a", "Succeeded"))
    assert states(cache) == {}
    cache.apply(CHILDREN, "ADDED", {"metadata": {"name": "not-ours", "labels": {}}})  # no uid label: ignored
    cache.forget("u2")
    assert states(cache, uid="u2") == {}


def test_a_list_started_before_an_event_loses_to_it():
    cache = Cache()
    cache.apply(CHILDREN, "ADDED", obj("a"))
    cache.apply(CHILDREN, "ADDED", obj("gone"))
    since = cache.mark()
    listed = [obj("a"), obj("gone"), obj("new")]   # the LIST's view, taken while these events arrive:
    cache.apply(CHILDREN, "MODIFIED", obj("a", "Succeeded"))
    cache.apply(CHILDREN, "DELETED", obj("gone"))
    cache.replace(CHILDREN, "u1", listed, since)
    assert states(cache) == {"a": "Succeeded", "new": "Running"}


def test_a_list_drops_what_it_no_longer_shows_and_a_selective_list_touches_only_its_selection():
    cache = Cache()
    for name, job_hash in (("p1", "h1"), ("p2", "h2")):
        cache.apply(PODS, "ADDED", obj(name, job_hash=job_hash))
    cache.replace(PODS, "u1", [], cache.mark(), labels={LABEL_HASH: "h1"})  # the event for p1 was missed
    assert states(cache, PODS) == {"p2": "Running"}
    cache.replace(PODS, "u1", [obj("p3")], cache.mark())
    assert states(cache, PODS) == {"p3": "Running"}


def test_slim_keeps_what_decisions_read_and_drops_pod_templates():
    child = slim(CHILDREN, obj("a"))
    assert child["spec"] == {"pytorchReplicaSpecs": {"Master": {"replicas": 1}}}
    assert child["metadata"]["labels"][LABEL_UID] == "u1" and "resourceVersion" not in child["metadata"]
    assert "spec" not in slim(PODS, obj("p"))
    # A pod's uid is its identity for the per-pod preemption count (a replacement keeps the pod's name).
    pod = obj("p")
    pod["metadata"]["uid"] = "pod-uid"
    assert slim(PODS, pod)["metadata"]["uid"] == "pod-uid"


def test_a_deleted_pods_last_state_is_kept_for_a_while():
    """The operator reads why a child failed from its pods; a pod the kubelet removed right after its
    trainer exited 3 is gone from the cache, but its last state (from the DELETED event) is kept."""
    from stilts.cache import PODS, Cache
    cache = Cache()
    pod = {"metadata": {"name": "p", "labels": {"stilts.dev/experiment-uid": "u"}},
           "status": {"containerStatuses": [{"name": "pytorch", "state": {"terminated": {"exitCode": 3}}}]}}
    cache.apply(PODS, "ADDED", pod)
    cache.apply(PODS, "DELETED", pod)
    assert cache.list(PODS, "u") == []
    assert cache.gone(PODS, "u")[0]["status"] == pod["status"]
    cache.forget("u")
    assert cache.gone(PODS, "u") == []
