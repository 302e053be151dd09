"""The kopf operator.

Handlers only trigger: every watch event of an experiment, of one of its children or of a trainer
pod adds the experiment's key to a work queue (workqueue.py), and a resync thread adds every
experiment periodically (watch streams can go silent). Workers run `Controller.reconcile`: read the
experiment, its records and its children; decide (reconcile.py, pure); act with the fewest calls;
write the records, then the status only when it changed.

There are no kopf timers, daemons or create/update/delete handlers: those make kopf put finalizers
or its own annotations on experiments. With event handlers only, deleting an experiment while the
operator is down completes at once, and children go with it through owner references.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from stilts_contract import items as contract_items

from . import answer, backends, manifests, metrics, report
from .cache import CHILDREN, PODS, Cache
from .manifests import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_HASH, LABEL_UID, RETRY_ANNOTATION
from .plan import Job, plan
from .policy import DEFAULT_TRAINER_IMAGE, AdmissionPolicy, violations
from .reconcile import ACTIVE, Observed, Policy, reconcile
from .spec import GROUP, PLURAL, VERSION, ExperimentSpec, SpecError, parse_spec
from .status import changed, eta, invalid, summarize
from .workqueue import WorkQueue

log = logging.getLogger("stilts.operator")
RESYNC_SECONDS = float(os.environ.get("STILTS_RESYNC_SECONDS", "30"))
BACKEND = backends.get(os.environ.get("STILTS_JOB_BACKEND", "pytorchjob"))
LOGGED_EVENTS = ("JobRearmed", "Look")
NO_PODS_GRACE_SECONDS = 5  # a child without pods this long: look at its events for why (admission)
WRITE_PARALLELISM = 8  # a reconcile's creates, deletes and results merge in flight at once
WHY_LOOK_SECONDS = 10  # how often to read events for children without pods (the reason shown meanwhile)
RELIST_SECONDS = float(os.environ.get("STILTS_RELIST_SECONDS", "300"))  # cache.py: the safety net's period
ITEMS_GIVE_UP_SECONDS = 120  # how long a finished evaluate job's log is tried before its items are given up
ITEMS_READ_TIMEOUT = 20      # seconds one read of a log may take
ITEMS_PER_PASS = 8     # logs read in one reconcile (the rest wait for the next pass)
ITEMS_LOG_LINES = 200  # the log's tail that holds the items (the trainer prints them last)


def api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # Reconcile workers and the writers share one pool: connections beyond it would be reopened
    # (a TLS handshake each) instead of kept.
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


# -- handlers (triggers only) ------------------------------------------------------------------------

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
    # Without these a watch can hang forever on a silent connection (kopf #585, #787).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING  # kopf's own chatter; our events go through kopf.event
    # Watch only what stilts made (server-side selection): not every pod of the cluster.
    settings.watching.label_selectors["pods"] = LABEL_UID
    settings.watching.label_selectors[BACKEND.group, BACKEND.plural] = LABEL_UID
    port = int(os.environ.get("STILTS_METRICS_PORT", "8080"))
    if port:
        metrics.serve(port)
    namespaces = [n for n in os.environ.get("STILTS_NAMESPACES", "").split(",") if n]
    memo.controller = Controller(api_client(), BACKEND, namespaces,
                                 admission=AdmissionPolicy.from_json(os.environ.get("STILTS_POLICY", "")),
                                 trainer_image=os.environ.get("STILTS_TRAINER_IMAGE") or DEFAULT_TRAINER_IMAGE)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_):
    memo.controller.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_experiment(memo: kopf.Memo, event, namespace, name, **_):
    memo.controller.seen(event.get("type"), event["object"])
    memo.controller.add((namespace, name))


@kopf.on.event(BACKEND.group, BACKEND.version, BACKEND.plural, labels={LABEL_EXPERIMENT: kopf.PRESENT})
def on_child(memo: kopf.Memo, event, namespace, labels, **_):
    memo.controller.cache.apply(CHILDREN, event.get("type"), event["object"])
    memo.controller.add((namespace, labels[LABEL_EXPERIMENT]))


@kopf.on.event("", "v1", "pods", labels={LABEL_EXPERIMENT: kopf.PRESENT})
def on_pod(memo: kopf.Memo, event, namespace, labels, **_):
    memo.controller.cache.apply(PODS, event.get("type"), event["object"])
    memo.controller.add((namespace, labels[LABEL_EXPERIMENT]))


# -- the controller ----------------------------------------------------------------------------------

@dataclass
class Known:
    """What the controller remembers of one live experiment between reconciles (dropped with it)."""
    uid: str
    generation: int = -1
    spec: ExperimentSpec | None = None
    jobs: list[Job] = field(default_factory=list)
    started: bool = False          # claim ensured and results loaded (once per operator process)
    listed_at: float = 0.0         # last uncached LIST of its children and pods (cache.py)
    # The records as this process last read or wrote them, with their resourceVersion. The operator is
    # their only writer, and it writes them (optimistic concurrency) before it acts, so a stale copy
    # costs a 409 and a fresh look, never a duplicate; re-read at every relist all the same.
    records: "Stored | None" = None
    planned_for: tuple = ()        # (generation, seeds) the jobs were planned for
    items: dict = field(default_factory=dict)        # job hash -> its per-item results, as stored
    items_tries: dict = field(default_factory=dict)  # job hash -> when reading its log first failed
    why_looked_at: float = 0.0     # last look at events for children without pods
    why: dict = field(default_factory=dict)  # what that look found: child -> (reason, message)
    status: dict | None = None     # the status this process last wrote
    results: dict = field(default_factory=dict)


@dataclass
class Stored:
    """The jobs ConfigMap: the job records, the retry annotation last acted on, the sequential design's
    looks (answer.py), and the resourceVersion they were read or written at."""
    records: dict
    retry: str
    looks: list[dict]
    version: str | None


class Controller:
    def __init__(self, api: client.ApiClient, backend: backends.Backend, namespaces: list[str],
                 workers: int = 4, resync_seconds: float = RESYNC_SECONDS,
                 admission: AdmissionPolicy = AdmissionPolicy(), trainer_image: str = DEFAULT_TRAINER_IMAGE):
        self.api, self.backend, self.namespaces = api, backend, namespaces
        self.admission, self.trainer_image = admission, trainer_image
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.queue = WorkQueue(self.reconcile, workers)
        self.cache = Cache()
        self.experiments: dict[tuple[str, str], dict] = {}  # as the watch last showed them
        # A reconcile's writes after its records go in parallel (children as the Job controller creates
        # pods): one experiment's wave of ready jobs is two API calls each, and one after the other
        # they made a reconcile slow.
        self.writers = ThreadPoolExecutor(WRITE_PARALLELISM, thread_name_prefix="write")
        self.known: dict[tuple[str, str], Known] = {}
        self.metrics = metrics.Metrics()
        self.resync_seconds = resync_seconds
        self._stop = threading.Event()
        self._started = threading.Lock()
        self._running = False

    def add(self, key: tuple[str, str]) -> None:
        """A handler's trigger. The first one starts the workers in a copy of the handler's context,
        where kopf's helpers (kopf.event) find their event loop; startup handlers do not have it yet."""
        if not self._running:
            with self._started:
                if not self._running:
                    self.start(contextvars.copy_context())
        self.queue.add(key)

    def seen(self, event_type: str | None, experiment: dict) -> None:
        key = (experiment["metadata"]["namespace"], experiment["metadata"]["name"])
        if event_type == "DELETED":
            self.experiments.pop(key, None)
        else:
            self.experiments[key] = experiment

    def start(self, context: contextvars.Context | None = None) -> "Controller":
        self.queue.start(context)
        threading.Thread(target=self._resync, name="resync", daemon=True).start()
        self._running = True
        return self

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()

    def _resync(self) -> None:
        while not self._stop.wait(self.resync_seconds):
            try:
                for namespace in self.namespaces or [None]:
                    items = (self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                             if namespace else self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))
                    for item in items["items"]:
                        self.queue.add((item["metadata"]["namespace"], item["metadata"]["name"]))
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("resync failed")

    # -- reading ---------------------------------------------------------------------------------------
    @staticmethod
    def _items(response) -> list[dict]:
        """Items of a LIST read raw: parsing JSON is several times faster than building the client's models."""
        return json.loads(response.data)["items"]

    def _list_pods(self, namespace: str, selector: str) -> list[dict]:
        return self._items(self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False))

    def _relist(self, namespace: str, uid: str) -> None:
        """The uncached truth about one experiment's children and pods (see cache.py)."""
        b, selector = self.backend, f"{LABEL_UID}={uid}"
        since = self.cache.mark()
        self.cache.replace(CHILDREN, uid, self._items(self.custom.list_namespaced_custom_object(
            b.group, b.version, namespace, b.plural, label_selector=selector, _preload_content=False)), since)
        since = self.cache.mark()
        self.cache.replace(PODS, uid, self._list_pods(namespace, selector), since)

    def _exit_known(self, state: str, pods: list[dict]) -> bool:
        """Whether the cached pods already tell a finished child's outcome: the leader's exit after a
        success (its summary), some pod's exit after a failure (its reason, whether it is permanent)."""
        container = self.backend.container
        if state == "Succeeded":
            return any(self.backend.is_leader(p) and backends.terminated(p, container) for p in pods)
        return any(backends.terminated(p, container) for p in pods)

    def _why_no_pods(self, namespace: str, children: set[str]) -> dict[str, tuple[str, str]]:
        """Pods refused at creation (admission, quota) leave only events, on the child or on what its
        controller made under the child's name (Trainer v2's JobSet). One LIST of the namespace's
        warnings serves every child that waits."""
        if not children:
            return {}
        events = self._items(self.core.list_namespaced_event(namespace, field_selector="type=Warning",
                                                             _preload_content=False))
        why = {}
        for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
            child = (event.get("involvedObject") or {}).get("name")
            if child in children:  # the latest one wins
                why[child] = (event.get("reason") or "FailedCreate", event.get("message", ""))
        return why

    def observe(self, namespace: str, stem: str, uid: str, children: list[dict], pods: list[dict],
                active: set[str], now: float, known: Known) -> dict[str, Observed]:
        """Children as the backend sees them. `active`: the children whose outcome is still awaited;
        for those that just ended, the pods (the summary, the exit codes) are read uncached, once."""
        by_attempt: dict[tuple[str, str], list[dict]] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            by_attempt.setdefault((labels.get(LABEL_HASH), labels.get(LABEL_ATTEMPT)), []).append(pod)
        # Pods deleted lately still tell their story: an evicted pod the kubelet removed once its trainer
        # exited 3, which its controller replaced in place (the training operator re-creates a deleted pod)
        # or whose child then failed: its preemption counts, and the failure is read from it.
        gone: dict[tuple[str, str], list[dict]] = {}
        for pod in self.cache.gone(PODS, uid):
            labels = pod["metadata"].get("labels") or {}
            gone.setdefault((labels.get(LABEL_HASH), labels.get(LABEL_ATTEMPT)), []).append(pod)

        def with_gone(key: tuple[str, str], live: list[dict]) -> list[dict]:
            names = {p["metadata"]["name"] for p in live}
            return live + [p for p in gone.get(key, []) if p["metadata"]["name"] not in names]
        observed, podless = {}, set()
        for child in children:
            meta = child["metadata"]
            key = (meta["labels"].get(LABEL_HASH), meta["labels"].get(LABEL_ATTEMPT))
            if meta.get("deletionTimestamp"):
                observed[meta["name"]] = Observed("Terminating")
                continue
            seen = self.backend.observe(child, with_gone(key, by_attempt.get(key, [])))
            if seen.state in ("Succeeded", "Failed") and meta["name"] in active and \
                    not self._exit_known(seen.state, by_attempt.get(key, [])):
                by_attempt[key] = self._list_pods(namespace, f"{LABEL_UID}={uid},{LABEL_HASH}={key[0]},"
                                                             f"{LABEL_ATTEMPT}={key[1]}")
                seen = self.backend.observe(child, with_gone(key, by_attempt[key]))
            if seen.state == "Pending" and not by_attempt.get(key) and not seen.reason and \
                    now - _timestamp(meta.get("creationTimestamp")) > NO_PODS_GRACE_SECONDS:
                podless.add(meta["name"])
            observed[meta["name"]] = seen
        if podless and now - known.why_looked_at >= WHY_LOOK_SECONDS:
            known.why, known.why_looked_at = self._why_no_pods(namespace, podless), now
        for name in podless & known.why.keys():
            observed[name].reason, observed[name].message = known.why[name]
        for (job_hash, attempt), _ in by_attempt.items():  # pods whose child is gone: still terminating
            name = manifests.child_name(stem, job_hash or "", int(attempt or 0))
            observed.setdefault(name, Observed("Terminating"))
        return observed

    # -- the reconcile -------------------------------------------------------------------------------
    def reconcile(self, key: tuple[str, str]) -> float | None:
        started = time.perf_counter()
        try:
            return self._reconcile(*key)
        except ApiException as err:
            if err.status == 409:  # someone wrote first (records, status): look again from what is there
                if key in self.known:
                    self.known[key].records = self.known[key].status = None
                return 0.2
            metrics.RECONCILE_ERRORS.inc()
            log.error("reconcile %s/%s failed: %s %s", *key, err.status, err.reason)
            return 5.0
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            log.exception("reconcile %s/%s failed", *key)
            return 5.0
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def _reconcile(self, namespace: str, name: str) -> float | None:
        """One pass, as reconcile.py's contract says: read (the experiment, its plan, the records and the
        children), decide (the pure `reconcile`, with the design's look when one is due), write (the
        records and looks first, then children and results), report (status, events, metrics)."""
        now = time.time()
        read = self._read(namespace, name, now)
        if read is None:
            return None
        experiment, known, previous = read
        stem = manifests.prefix(experiment, self.backend.max_name)
        self._start(experiment, known, stem)
        stored, observed, retry = self._observe_all(experiment, known, stem, now)
        self._replan(known, experiment, stored.looks)
        d = reconcile(known.jobs, stored.records, observed, now, Policy.of(known.spec),
                      lambda h, a: manifests.child_name(stem, h, a), rearm=bool(retry) and retry != stored.retry,
                      looks=stored.looks, look=self._look(experiment, known, stored.looks, now))
        self._write(experiment, known, stem, d, stored, retry)
        self._report(experiment, known, stem, d, previous, now)
        return d.requeue_after

    def _read(self, namespace: str, name: str, now: float) -> tuple[dict, Known, dict] | None:
        """The experiment (from the watch between relists), what this process knows of it, and its last
        status; planned once per generation. None when it is gone, being deleted, or invalid."""
        known = self.known.get((namespace, name))
        experiment = self.experiments.get((namespace, name))
        if experiment is None or known is None or now - known.listed_at >= RELIST_SECONDS:
            try:  # the watch's copy is used between relists (cache.py); the operator writes only its status
                experiment = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as err:
                if err.status == 404:
                    gone = self.known.pop((namespace, name), None)
                    if gone:
                        self.cache.forget(gone.uid)
                    self.metrics.forget(namespace, name)
                    return None
                raise
        meta = experiment["metadata"]
        if meta.get("deletionTimestamp"):
            return None
        generation = meta.get("generation", 0)
        if known is None or known.uid != meta["uid"]:
            known = self.known[(namespace, name)] = Known(meta["uid"])
        # The operator is the status's only writer: what it last wrote is newer than a lagging watch.
        previous = known.status if known.status is not None else experiment.get("status") or {}
        if known.generation != generation:  # plan once per generation: hashing thousands of jobs takes time
            try:
                known.spec = parse_spec(experiment["spec"], f"{namespace}/{name}")
                refused = violations(known.spec, self.admission, self.trainer_image) + \
                    self.backend.unsupported(known.spec)
                if refused:
                    raise PolicyError("; ".join(refused))
                known.jobs, known.planned_for = plan(known.spec), ()  # validated; _replan adds the design's waves
                known.records = None  # read again: looks taken under another answer block are dropped there
            except SpecError as err:  # the CRD refuses most of this; what is left is reported, not retried
                reason = "PolicyViolation" if isinstance(err, PolicyError) else "InvalidSpec"
                status = invalid(str(err), previous, generation, now, reason)
                if changed(previous, status):
                    self._patch_status(namespace, name, status)
                    kopf.event(experiment, type="Warning", reason=reason, message=str(err)[:1000])
                known.generation = -1
                return None
            known.generation = generation
        return experiment, known, previous

    def _start(self, experiment: dict, known: Known, stem: str) -> None:
        """Once per experiment and operator process: the claim, and the results kept so far."""
        if known.started:
            return
        namespace = experiment["metadata"]["namespace"]
        if not known.spec.storage.claim_name:
            self._create(experiment, lambda: self.core.create_namespaced_persistent_volume_claim(
                namespace, manifests.claim(experiment)))
        known.results = self._read_store(namespace, manifests.store_names(stem)[1])[0]
        known.items = self._read_items(namespace, experiment["metadata"]["uid"])
        known.started = True

    def _read_items(self, namespace: str, uid: str) -> dict:
        """Every per-item result the operator has brought home for this experiment: job hash -> items."""
        selector = f"{LABEL_UID}={uid},{manifests.LABEL_STORE}=items"
        stores = self._items(self.core.list_namespaced_config_map(namespace, label_selector=selector,
                                                                  _preload_content=False))
        return {h: json.loads(v) for cm in stores for h, v in (cm.get("data") or {}).items()}

    def _observe_all(self, experiment: dict, known: Known, stem: str, now: float) -> tuple[Stored, dict, str]:
        """The records and looks (what the operator last wrote), the children and pods as observed, and
        the retry annotation; finished evaluate jobs' per-item results brought home on the way."""
        meta = experiment["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION, "")
        if now - known.listed_at >= RELIST_SECONDS:
            self._relist(namespace, uid)
            known.listed_at, known.records = now, None
        if known.records is None:
            known.records = self._read_records(namespace, manifests.store_names(stem)[0], known)
        stored = known.records
        for job_hash, rec in stored.records.items():  # fencing: a retry waits for pods the cache may not show yet
            if rec["state"] == "Backoff" and rec.get("retryAfter", 0) <= now:
                labels, since = {LABEL_UID: uid, LABEL_HASH: job_hash}, self.cache.mark()
                selector = ",".join(f"{k}={v}" for k, v in labels.items())
                self.cache.replace(PODS, uid, self._list_pods(namespace, selector), since, labels)
        active = {manifests.child_name(stem, h, r["attempts"]) for h, r in stored.records.items() if r["state"] in ACTIVE}
        observed = self.observe(namespace, stem, uid, self.cache.list(CHILDREN, uid), self.cache.list(PODS, uid),
                                active, now, known)
        self._fetch_items(experiment, known, stem, stored.records)
        return stored, observed, retry

    # -- the sequential design -----------------------------------------------------------------------
    def _replan(self, known: Known, experiment: dict, looks: list[dict]) -> None:
        """The plan of the seeds the design has released (all of spec.seeds without one), once per
        generation and wave: hashing thousands of jobs takes time."""
        key = (experiment["metadata"].get("generation", 0), tuple(answer.seeds(known.spec, looks)))
        if known.planned_for != key:
            known.jobs, known.planned_for = plan(known.spec, looks), key

    def _look(self, experiment: dict, known: Known, looks: list[dict], now: float):
        """The look reconcile takes when a wave has ended: the report of the experiment's results, as
        `stilts report tx/NAME` makes it. None while a finished run's per-item results are still coming."""
        def take(records: dict, new_results: dict) -> dict | None:
            results = {**known.results, **new_results}
            if any(self._items_awaited(job.hash, results, known) for job in known.jobs
                   if job.phase == "evaluate" and records.get(job.hash, {}).get("state") == "Succeeded"):
                return None
            seen = SimpleNamespace(name=experiment["metadata"]["name"], spec=known.spec, jobs=known.jobs,
                                   records=records, results=results, items=known.items, looks=looks,
                                   costs=answer.job_costs(known.jobs, records))
            return answer.take(report.from_cluster(seen), now)
        return take

    @staticmethod
    def _items_awaited(job_hash: str, results: dict, known: Known) -> bool:
        summary = results.get(job_hash) or {}
        return bool(summary.get("itemsDigest")) and job_hash not in known.items and not summary.get("itemsMissing")

    def _fetch_items(self, experiment: dict, known: Known, stem: str, records: dict) -> None:
        """Per-item results of finished evaluate jobs, from the last lines of their leader's log (the
        termination message holds 4 KB, a run's items about 9), checked against the digest of the job's
        summary and kept in the items ConfigMaps. A log that cannot be read (its pod
        gone, a kubelet that does not answer) for two minutes is given up: that run's test-set term is then
        bounded by the binomial, which the report says."""
        wanted = [job for job in known.jobs if job.phase == "evaluate"
                  and records.get(job.hash, {}).get("state") == "Succeeded"
                  and self._items_awaited(job.hash, known.results, known)][:ITEMS_PER_PASS]
        if not wanted:
            return
        namespace, uid = experiment["metadata"]["namespace"], experiment["metadata"]["uid"]
        pods = self.cache.list(PODS, uid)

        def fetch(job: Job) -> tuple[Job, dict | None, str]:
            attempt = str(records[job.hash]["attempts"])
            # The leader that exited 0: one replaced in place (TrainJob) leaves its predecessor beside it.
            leader = next((p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_HASH) == job.hash
                           and p["metadata"]["labels"].get(LABEL_ATTEMPT) == attempt and self.backend.is_leader(p)
                           and (backends.terminated(p, self.backend.container) or {}).get("exitCode") == 0), None)
            if leader is None:
                return job, None, "its leader pod is gone"
            try:
                text = self.core.read_namespaced_pod_log(leader["metadata"]["name"], namespace,
                                                         container=self.backend.container, tail_lines=ITEMS_LOG_LINES,
                                                         _request_timeout=ITEMS_READ_TIMEOUT)
            except Exception as err:  # noqa: BLE001 - a log that cannot be read now is tried again later
                return job, None, f"its log could not be read ({getattr(err, 'status', '')} {err})"[:200]
            found = contract_items.parse(text, job.hash, known.results[job.hash]["itemsDigest"])
            return job, found, "" if found else "its log does not end with items matching its summary's digest"

        buckets: dict[str, dict] = {}
        missing: dict[str, dict] = {}
        for job, found, why in self.writers.map(fetch, wanted):
            if found:
                known.items[job.hash] = found
                buckets.setdefault(manifests.items_store(stem, job.hash), {})[job.hash] = json.dumps(
                    found, separators=(",", ":"))
                continue
            first = known.items_tries.setdefault(job.hash, time.time())
            if time.time() - first >= ITEMS_GIVE_UP_SECONDS:
                log.warning("%s: per-item results given up (the report bounds its test-set term by the "
                            "binomial): %s", job.name, why)
                missing[job.hash] = {**known.results[job.hash], "itemsMissing": True}
        for store, data in buckets.items():
            self._merge_store(experiment, store, data, {manifests.LABEL_STORE: "items"})
        if missing:
            known.results.update(missing)
            self._merge_store(experiment, manifests.store_names(stem)[1], {
                h: json.dumps(r, separators=(",", ":"), sort_keys=True) for h, r in missing.items()})

    def _write(self, experiment: dict, known: Known, stem: str, d, stored: Stored, retry: str) -> None:
        """New results, then the intent: a crash after the records are written re-creates (409, adopted)
        rather than forgets, and a look is recorded with the records it saw, in one write, so it is never
        taken twice nor skipped. Then the rest, which is independent: deletions and creations at once."""
        namespace, uid = experiment["metadata"]["namespace"], experiment["metadata"]["uid"]
        jobs_store, results_store = manifests.store_names(stem)
        if d.results:  # before the records that say Succeeded: a crash in between must not lose a summary
            self._merge_store(experiment, results_store, {
                h: json.dumps(r, separators=(",", ":"), sort_keys=True) for h, r in d.results.items()})
            known.results.update(d.results)
        if d.records != stored.records or retry != stored.retry or d.looks != stored.looks:
            known.records = None  # whatever happens to the write, read them again next time
            version = self._write_records(experiment, jobs_store, d.records, retry, known, d.looks, stored.version)
            known.records = Stored(d.records, retry, d.looks, version)
        actions = [self.writers.submit(self._delete_child, namespace, uid, child) for child in d.delete]
        actions += [self.writers.submit(self._create_child, experiment, known.spec, stem, *create) for create in d.create]
        for action in actions:
            action.result()  # the first failure raises: the reconcile is retried

    def _report(self, experiment: dict, known: Known, stem: str, d, previous: dict, now: float) -> None:
        meta = experiment["metadata"]
        jobs_store, results_store = manifests.store_names(stem)
        design = answer.Design.of(known.spec)
        status = summarize(known.jobs, d.records, previous, meta.get("generation", 0), now, design, d.looks)
        status.update(jobsConfigMap=jobs_store, resultsConfigMap=results_store)
        if changed(previous, status):
            self._patch_status(meta["namespace"], meta["name"], status)
        # Events say what needs a person: warnings (failures, retries, lost children), re-arms, and the
        # experiment's own transitions. A job created or finished is routine (`stilts status`, the
        # dashboard); one event each would bury the rest in `kubectl describe` at paper scale.
        for kind, reason, message in d.events:
            if kind == "Warning" or reason in LOGGED_EVENTS:
                kopf.event(experiment, type=kind, reason=reason, message=message[:1000])
        if status["phase"] != previous.get("phase"):
            kind = "Warning" if status["phase"] == "Failed" else "Normal"
            kopf.event(experiment, type=kind, reason=f"Experiment{status['phase']}",
                       message=f"{status['progress']} jobs succeeded; {status['message']}"[:1000])
        self.metrics.record(meta["namespace"], meta["name"], status["phase"], known.jobs, d.records, known.results,
                            eta(known.jobs, d.records, known.spec.max_concurrent_jobs), now, status.get("answer"))

    # -- writing -------------------------------------------------------------------------------------
    def _create_child(self, experiment: dict, spec: ExperimentSpec, stem: str, job: Job, attempt: int) -> None:
        """The job's ConfigMap (job.json), then the child that mounts it."""
        namespace, b = experiment["metadata"]["namespace"], self.backend
        child = manifests.child_name(stem, job.hash, attempt)
        template = manifests.pod_template(experiment, spec, job, attempt, child, b.container, self.trainer_image)
        self._create(experiment, lambda: self.core.create_namespaced_config_map(
            namespace, manifests.config_map(experiment, job, attempt, child)))
        body = b.manifest(experiment, job, attempt, child, template, manifests.metadata(experiment, child, job, attempt))
        created = self._create(experiment, lambda: self.custom.create_namespaced_custom_object(
            b.group, b.version, namespace, b.plural, body), kind=b.plural, name=child)
        self.cache.apply(CHILDREN, "ADDED", created)  # the next reconcile may come before its watch event

    def _create(self, experiment: dict, call, kind: str = "", name: str = ""):
        """Create; an existing object of ours (same deterministic name, same owner) is adopted."""
        try:
            return call()
        except ApiException as err:
            if err.status != 409:
                raise
            if kind:
                b = self.backend
                existing = self.custom.get_namespaced_custom_object(b.group, b.version,
                                                                    experiment["metadata"]["namespace"], b.plural, name)
                owners = {o.get("uid") for o in existing["metadata"].get("ownerReferences") or []}
                if experiment["metadata"]["uid"] not in owners:
                    raise RuntimeError(f"{kind}/{name} exists and belongs to another object; not adopting it")
                return existing
            return None

    def _delete_child(self, namespace: str, uid: str, name: str) -> None:
        """The next attempt is created only once this one's pods are gone (see observe: pods without a
        child count as Terminating), so attempts never overlap."""
        b = self.backend
        try:
            self.custom.delete_namespaced_custom_object(b.group, b.version, namespace, b.plural, name,
                                                        propagation_policy=b.delete_propagation)
        except ApiException as err:
            if err.status != 404:
                raise
            self.cache.discard(CHILDREN, uid, name)

    def _read_store(self, namespace: str, name: str) -> tuple[dict, dict, str | None]:
        """(data parsed as JSON, annotations, resourceVersion) of one of the experiment's ConfigMaps."""
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return {}, {}, None
            raise
        data = {k: json.loads(v) for k, v in (cm.data or {}).items()}
        return data, cm.metadata.annotations or {}, cm.metadata.resource_version

    def _read_records(self, namespace: str, name: str, known: Known) -> Stored:
        """The jobs ConfigMap. Looks taken under another design (an edited answer block) are dropped:
        finished jobs keep their records, so the new design's looks are taken again, one pass each."""
        data, annotations, version = self._read_store(namespace, name)
        saved = data.get("answer") or {}
        design = answer.Design.of(known.spec)
        looks = saved.get("looks", []) if design and saved.get("design") == asdict(design) else []
        return Stored(data.get("records", {}), annotations.get(RETRY_ANNOTATION, ""), looks, version)

    def _write_records(self, experiment: dict, name: str, records: dict, retry: str, known: Known,
                       looks: list[dict], version: str | None) -> str:
        """Returns the new resourceVersion."""
        data = {"records": json.dumps(records, separators=(",", ":"), sort_keys=True)}
        design = answer.Design.of(known.spec)
        if design:
            data["answer"] = json.dumps({"design": asdict(design), "looks": looks}, separators=(",", ":"))
        body = manifests.store(experiment, name, data)
        body["metadata"]["annotations"] = {RETRY_ANNOTATION: retry}
        namespace = experiment["metadata"]["namespace"]
        if version is None:
            return self.core.create_namespaced_config_map(namespace, body).metadata.resource_version
        # optimistic concurrency: a stale read gets 409 and the reconcile starts over
        body["metadata"]["resourceVersion"] = version
        return self.core.replace_namespaced_config_map(name, namespace, body).metadata.resource_version

    def _merge_store(self, experiment: dict, name: str, data: dict, labels: dict | None = None) -> None:
        namespace = experiment["metadata"]["namespace"]
        try:
            self.core.patch_namespaced_config_map(name, namespace, {"data": data})
        except ApiException as err:
            if err.status != 404:
                raise
            body = manifests.store(experiment, name, data)
            body["metadata"]["labels"].update(labels or {})
            self.core.create_namespaced_config_map(namespace, body)

    def _patch_status(self, namespace: str, name: str, status: dict) -> None:
        known = self.known.get((namespace, name))
        if known:
            known.status = None  # whatever happens to the patch, read it again next time
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        if known:
            known.status = status


class PolicyError(SpecError):
    """The experiment is valid but outside what the cluster admin allows."""


def _timestamp(value: str | None) -> float:
    if not value:
        return time.time()
    import calendar

    return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))


def run(namespaces: list[str], standalone: bool = True, peering: str | None = None) -> None:
    """Entry point of `stilts operator` and of the operator image. Ports come from the environment
    (STILTS_METRICS_PORT, default 8080; STILTS_HEALTH_PORT for /healthz, default 8081)."""
    liveness = f"http://0.0.0.0:{os.environ.get('STILTS_HEALTH_PORT', '8081')}/healthz"
    level = os.environ.get("STILTS_LOG_LEVEL", "INFO").upper()
    kopf.configure(verbose=level == "DEBUG")
    logging.getLogger().setLevel(level)
    if level != "DEBUG":  # one line per watch event ("Handler 'on_pod' succeeded") is noise at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    os.environ["STILTS_NAMESPACES"] = ",".join(namespaces)
    kopf.run(clusterwide=not namespaces, namespaces=namespaces, standalone=standalone, peering_name=peering,
             liveness_endpoint=liveness)
