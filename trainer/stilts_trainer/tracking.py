"""MLflow tracking of one job on rank 0, never in training's way (docs/tracking.md).

Training only puts points on a bounded queue. A daemon thread does the rest: it imports MLflow (seconds),
finds the job's run (the one an earlier attempt made, by the job's hash, under the experiment's parent
run) and sends the points in batches. While the server is down or slow the thread retries with
backoff and the queue keeps what comes, up to QUEUE_POINTS; past that, new points are dropped with a
warning. The flush at the end of a phase waits at most FLUSH_SECONDS. Nothing here raises into training.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from stilts_contract import tracking as contract

log = logging.getLogger("stilts_trainer")

# A report every 10 steps puts 4-14 points on the queue (loss, learning rate, tokens/s, head losses, MoE
# figures): 50,000 points hold some 40,000-100,000 steps of a phase, so an outage of hours loses nothing.
QUEUE_POINTS = 50_000
BATCH = 500            # points per request (MLflow's log_batch takes at most 1,000 metrics)
PARAMS_PER_BATCH = 100  # and at most 100 params
FLUSH_SECONDS = 5.0    # the most a phase's end waits for the server
RETRY_SECONDS = (0.5, 10.0)  # first and longest wait between tries while the server is unreachable
# MLflow's own retries (7, up to minutes per request) would hold the queue that long; the thread
# retries itself, so one request fails fast. A variable set by the user wins.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


def default_client(uri: str):
    from mlflow.tracking import MlflowClient  # a few seconds: paid in the thread, not by training

    return MlflowClient(uri)


class Tracker:
    """One job's run: `add` points from the training thread, `flush` and `close` bounded in time."""

    def __init__(self, body: dict, attempt: str = "", client_factory: Callable | None = None,
                 queue_points: int = QUEUE_POINTS, flush_seconds: float = FLUSH_SECONDS):
        self.body, self.settings, self.attempt = body, body["tracking"], attempt
        self.flush_seconds = flush_seconds
        self._factory = client_factory or default_client
        self._queue: queue.Queue = queue.Queue(maxsize=queue_points)
        self._pending: list = []  # taken from the queue, not yet accepted by the server
        self._logged: dict[str, int] = {}  # last step of each key already in the run
        self._sent = threading.Condition()
        self._outstanding = 0  # points added (and the end, once asked for) the server has not accepted
        self._failures = 0  # requests that failed, so far
        self._end: str | None = None  # the run's status once the phase has ended
        self.run_id: str | None = None
        self.created = False
        self.dropped = 0
        self.waited = 0.0  # seconds training spent in flush and close (the only calls that wait)
        self._down_since: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # ends a retry's wait: a phase's end tries the server at once
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self._thread = threading.Thread(target=self._work, name="stilts-mlflow", daemon=True)
        self._thread.start()

    # -- the training thread's side: never blocks beyond flush_seconds ---------------------------------
    def add(self, key: str, value: float, step: int) -> None:
        with self._sent:  # counted first: the thread may send the point before put_nowait returns
            self._outstanding += 1
        try:
            self._queue.put_nowait((key, float(value), int(step), int(time.time() * 1000)))
        except queue.Full:
            self._accepted(1)
            self.dropped += 1
            if self.dropped == 1:
                log.warning("MLflow: %d points queued and the server not taking them; dropping new points "
                            "until it does (training goes on)", self._queue.maxsize)

    def flush(self) -> bool:
        """Wait until the server has every point; True when it has. The wait ends sooner at the first
        request that fails after it began (a server that refuses costs a phase's end nothing), and at
        flush_seconds in any case (a server that hangs)."""
        started = time.perf_counter()
        with self._sent:
            failures = self._failures
            self._wake.set()  # a thread waiting to retry tries now
            self._sent.wait_for(lambda: self._outstanding == 0 or self._failures > failures, self.flush_seconds)
            done = self._outstanding == 0
        self.waited += time.perf_counter() - started
        if not done:
            log.warning("MLflow: %d points not sent (the server did not take them within %.1f s); training goes on "
                        "without them", self._outstanding, time.perf_counter() - started)
        return done

    def close(self, status: str = "FINISHED") -> bool:
        """The phase ended: send what is queued, then mark the run `status`; bounded like flush."""
        with self._sent:
            self._end = status
            self._outstanding += 1
        done = self.flush()
        self._stop.set()
        self._wake.set()
        if self.dropped:
            log.warning("MLflow: %d points were dropped while the server was unreachable", self.dropped)
        log.info("MLflow: run %s %s; training waited %.2f s for the server in this phase", self.run_id,
                 "complete" if done else f"not complete ({self._outstanding} items unsent)", self.waited)
        return done

    # -- the daemon thread ---------------------------------------------------------------------------
    def _work(self) -> None:
        wait = RETRY_SECONDS[0]
        client = None
        while not self._stop.is_set():
            try:
                client = client or self._factory(self.settings["uri"])
                if self.run_id is None:
                    self._resolve(client)
                if not self._drain(client) and not self._finish(client):
                    self._await_points()
                self._recovered()
                wait = RETRY_SECONDS[0]
            except Exception as err:  # noqa: BLE001 - the server's problem is never training's
                self._failed(err)
                self._wake.wait(wait)
                self._wake.clear()
                wait = min(wait * 2, RETRY_SECONDS[1])

    def _await_points(self) -> None:
        """Block until a point comes, the phase ends or the tracker stops; the point goes to `_pending`."""
        while not self._stop.is_set() and self._end is None:
            try:
                self._pending.append(self._queue.get(timeout=0.2))
                return
            except queue.Empty:
                continue

    def _resolve(self, client) -> None:
        """The job's run: found again by its hash (a retry, a resumed preemption), else made."""
        experiment_id = contract.ensure_experiment(client, self.settings["experimentName"])
        parent = self.settings.get("parentRunId") or contract.ensure_parent(
            client, experiment_id, self.settings["parentKey"], self.body.get("experiment", ""))
        tags = contract.job_tags(self.body, self.settings["parentKey"], parent, self.attempt)
        run_id, created = contract.ensure_job_run(client, experiment_id, tags)
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in contract.job_params(self.body).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):  # logging a param again with its value is allowed
            client.log_batch(run_id, params=params[i:i + PARAMS_PER_BATCH])
        if not created:
            client.set_tag(run_id, "attempt", str(self.attempt))
        if not created:
            client.update_run(run_id, status="RUNNING")
        self.run_id, self.created = run_id, created

    def _drain(self, client) -> bool:
        """Send one batch (the pending one first); False when there was nothing to send."""
        while len(self._pending) < BATCH:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not self._pending:
            return False
        self._send(client, self._pending)
        self._accepted(len(self._pending))
        self._pending = []
        return True

    def _finish(self, client) -> bool:
        """Everything sent and the phase ended: mark the run. False when there is nothing to do."""
        if self._end is None or self._stop.is_set():
            return False
        client.set_terminated(self.run_id, self._end)
        self._accepted(1)
        self._stop.set()
        return True

    def _accepted(self, count: int) -> None:
        with self._sent:
            self._outstanding -= count
            self._sent.notify_all()

    def _send(self, client, points: list) -> None:
        from mlflow.entities import Metric

        for key in {p[0] for p in points} - set(self._logged):
            self._logged[key] = self._last_step(client, key)
        fresh = contract.fresh([(k, v, s) for k, v, s, _ in points], self._logged)
        keep = {(k, s) for k, _, s in fresh}
        metrics = [Metric(k, v, ts, s) for k, v, s, ts in points if (k, s) in keep]
        if metrics:  # the timestamp is the point's own, so a batch sent twice after a timeout is one
            client.log_batch(self.run_id, metrics=metrics)
        for k, _, s in fresh:
            self._logged[k] = max(self._logged.get(k, -1), s)

    def _last_step(self, client, key: str) -> int:
        """The last step of `key` an earlier attempt logged (a new run has none)."""
        if self.created:
            return -1
        return max((m.step for m in client.get_metric_history(self.run_id, key)), default=-1)

    def _failed(self, err: Exception) -> None:
        with self._sent:
            self._failures += 1
            self._sent.notify_all()
        if self._down_since is None:
            self._down_since = time.time()
            log.warning("MLflow at %s unreachable (%s); training goes on, points wait in the queue and are "
                        "retried", self.settings["uri"], str(err).splitlines()[0][:200] if str(err) else type(err))

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.info("MLflow reachable again, %.0f s after the first failed request", time.time() - self._down_since)
            self._down_since = None


def for_job(body: dict) -> Tracker | None:
    """The job's tracker when its job.json asks for tracking (rank 0 only: the caller's business)."""
    if not body.get("tracking"):
        return None
    return Tracker(body, attempt=os.environ.get("STILTS_ATTEMPT", ""))
