"""What the watches have shown of stilts' children and trainer pods, by experiment uid.

kopf already watches and parses every child and pod stilts made (for its triggers), so reconciles
read them from here instead of LISTing them each time: the LISTs of a 56-job experiment's children
and pods were half of a reconcile under load. This is controller-runtime's cached client, reduced to
what stilts needs:

- an experiment's first reconcile in an operator process LISTs (`replace`), so the cache never
  starts from "nothing exists" after a restart; later LISTs, every RELIST_SECONDS, bound the damage
  of a missed event;
- watch events keep it current (`apply`); a LIST never overwrites what an event newer than the LIST's
  start said (`mark` before the LIST), so a slow LIST cannot bring back an old state or a deleted object;
- what a stale cache can still cause is harmless by construction: a create of something that exists
  gets 409 and is adopted (uid-checked), a delete of something gone gets 404 (and drops it here), the
  pods of a child that just ended are read uncached when the cache lacks their exit, and a retry
  attempt is created only after an uncached look at that job's pods (fencing).
"""

from __future__ import annotations

import threading
import time

from .manifests import LABEL_UID

CHILDREN, PODS = "children", "pods"
GONE_SECONDS = 900  # how long a deleted object's last state is kept (see `gone`)
KEPT_METADATA = ("name", "uid", "labels", "creationTimestamp", "deletionTimestamp", "ownerReferences")


def slim(kind: str, obj: dict) -> dict:
    """What decisions read: identity, labels, status, and a child's spec without its pod templates
    (most of its bytes; a pod's spec is not read at all). Keeps the operator's memory small at scale."""
    out = {"metadata": {k: v for k, v in (obj.get("metadata") or {}).items() if k in KEPT_METADATA},
           "status": obj.get("status") or {}}
    if kind == CHILDREN and "spec" in obj:
        out["spec"] = _without_templates(obj["spec"])
    return out


def _without_templates(value):
    if isinstance(value, dict):
        return {k: _without_templates(v) for k, v in value.items() if k != "template"}
    if isinstance(value, list):
        return [_without_templates(v) for v in value]
    return value


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0  # counts events; a LIST started at mark m loses to anything applied after m
        self._objects: dict[tuple[str, str], dict[str, tuple[int, dict]]] = {}  # (kind, uid) -> name -> (seq, obj)
        self._deleted: dict[tuple[str, str], dict[str, int]] = {}  # (kind, uid) -> name -> seq of its DELETED
        self._gone: dict[tuple[str, str], dict[str, tuple[float, dict]]] = {}  # (kind, uid) -> name -> last state

    def apply(self, kind: str, event_type: str | None, obj: dict) -> None:
        """One watch event (type None: kopf's initial listing), or an object the operator just wrote."""
        meta = obj.get("metadata") or {}
        uid = (meta.get("labels") or {}).get(LABEL_UID)
        if not uid:
            return
        with self._lock:
            self._seq += 1
            objects = self._objects.setdefault((kind, uid), {})
            if event_type == "DELETED":
                objects.pop(meta["name"], None)
                self._deleted.setdefault((kind, uid), {})[meta["name"]] = self._seq
                self._gone.setdefault((kind, uid), {})[meta["name"]] = (time.monotonic(), slim(kind, obj))
            else:
                objects[meta["name"]] = (self._seq, slim(kind, obj))

    def mark(self) -> int:
        """Call before a LIST; pass the mark to `replace`."""
        with self._lock:
            return self._seq

    def replace(self, kind: str, uid: str, items: list[dict], since: int,
                labels: dict[str, str] | None = None) -> None:
        """An uncached LIST of one experiment's objects of one kind (only of those with `labels`, when
        the LIST selected by them), started at mark `since`. One experiment is reconciled by one
        worker at a time, so LISTs of one uid never overlap."""
        def selected(obj: dict) -> bool:
            mine = obj["metadata"].get("labels") or {}
            return all(mine.get(k) == v for k, v in (labels or {}).items())

        with self._lock:
            objects = self._objects.setdefault((kind, uid), {})
            deleted = self._deleted.pop((kind, uid), {})
            for name in [n for n, (seq, obj) in objects.items() if seq <= since and selected(obj)]:
                del objects[name]
            for item in items:
                name = item["metadata"]["name"]
                if name not in objects and deleted.get(name, -1) <= since:
                    objects[name] = (since, slim(kind, item))

    def gone(self, kind: str, uid: str) -> list[dict]:
        """The last state of objects deleted in the last GONE_SECONDS: a pod the kubelet removed right
        after it ended (an evicted trainer that exited 3) still tells why its child failed."""
        cutoff = time.monotonic() - GONE_SECONDS
        with self._lock:
            kept = self._gone.get((kind, uid), {})
            for name in [n for n, (at, _) in kept.items() if at < cutoff]:
                del kept[name]
            return [obj for _, obj in kept.values()]

    def discard(self, kind: str, uid: str, name: str) -> None:
        with self._lock:
            self._objects.get((kind, uid), {}).pop(name, None)

    def list(self, kind: str, uid: str) -> list[dict]:
        with self._lock:
            return [obj for _, obj in self._objects.get((kind, uid), {}).values()]

    def forget(self, uid: str) -> None:
        with self._lock:
            for store in (self._objects, self._deleted, self._gone):
                for key in [k for k in store if k[1] == uid]:
                    del store[key]
