"""Progress for Kubeflow Trainer v2: with its TrainJobStatus feature gate on, Trainer injects the URL of
its status server, a CA and a projected token into the TrainJob's pods (KUBEFLOW_TRAINER_SERVER_*),
and whatever rank 0 POSTs there becomes the TrainJob's `status.trainerStatus`: percent done, seconds
left, and a few metrics, shown by `kubectl get trainjob -o yaml` and the Kubeflow UI.

Posting runs in a background thread at most every MIN_INTERVAL seconds, so a slow or absent server
never delays a training step. Progress is a courtesy, and nothing about it may stop training: a CA file
that is missing or unreadable turns it off with a warning; any failure of an update (the network, TLS,
a malformed response) is logged when it starts and when it ends, and the next update tries again. The
token goes over https only, and never to where a redirect points.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

log = logging.getLogger("stilts_trainer")

URL, CA, TOKEN = "KUBEFLOW_TRAINER_SERVER_URL", "KUBEFLOW_TRAINER_SERVER_CA_CERT", "KUBEFLOW_TRAINER_SERVER_TOKEN"
MIN_INTERVAL = 30.0
MAX_METRICS = 16  # the API allows 256; a handful of names is what a status can show


def payload(step: int, total: int, eta: float | None, metrics: dict[str, float], now: float) -> dict:
    """The body of one update (trainer.kubeflow.org/v1alpha1 UpdateTrainJobStatusRequest)."""
    status = {"progressPercentage": max(0, min(100, int(100 * step / total))) if total else 0,
              "metrics": [{"name": name[:64], "value": f"{value:.6g}"} for name, value in
                          list(metrics.items())[:MAX_METRICS]],
              "lastUpdatedTime": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if eta is not None:
        status["estimatedRemainingSeconds"] = max(0, int(round(eta)))
    return {"trainerStatus": status}


class StatusReporter:
    def __init__(self, url: str, ca_file: str | None, token_file: str | None, interval: float = MIN_INTERVAL):
        self.url, self.token_file, self.interval = url, token_file, interval
        self.context = None
        self.enabled = True
        self._https = urllib.parse.urlsplit(url).scheme == "https"
        if self._https:
            try:
                self.context = ssl.create_default_context(cafile=ca_file)
            except Exception as err:  # noqa: BLE001 - a missing or bad CA file: no progress, training goes on
                log.warning("Kubeflow Trainer status server: cannot use the CA file %s (%s: %s); progress is not "
                            "reported there, training goes on", ca_file, type(err).__name__, err)
                self.enabled = False
        elif token_file:
            log.warning("Kubeflow Trainer status server: %s is not https, so progress goes there without the token",
                        url)
        self._last = 0.0
        self._pending: dict | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="trainer-status", daemon=True)
        if self.enabled:
            self._thread.start()

    @classmethod
    def from_env(cls, env=os.environ) -> "StatusReporter | None":
        if not env.get(URL):
            return None
        try:
            reporter = cls(env[URL], env.get(CA), env.get(TOKEN))
        except Exception as err:  # noqa: BLE001 - progress is a courtesy: it never stops a phase
            log.warning("Kubeflow Trainer status server: %s; progress is not reported there, training goes on", err)
            return None
        return reporter if reporter.enabled else None

    def report(self, step: int, total: int, eta: float | None, metrics: dict[str, float], final: bool = False):
        if not self.enabled:
            return
        now = time.time()
        if not final and now - self._last < self.interval:
            return
        try:
            body = payload(step, total, eta, metrics, now)
        except Exception as err:  # noqa: BLE001 - a metric that does not format: skip this update
            self._failed(err)
            return
        self._last = now
        with self._lock:
            self._pending = body
            self._idle.clear()
        self._wake.set()

    def close(self, timeout: float = 5.0) -> bool:
        """Wait (at most `timeout` seconds) until the last update is handled (sent, or its failure logged);
        whether it was."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                body, self._pending = self._pending, None
            if body is not None:
                try:
                    self._post(body)
                except Exception as err:  # noqa: BLE001 - HTTPException, TLS, a token file gone: the thread lives on
                    self._failed(err)
                else:
                    if self._failing:
                        log.info("Kubeflow Trainer status server: reachable again, progress is reported there")
                    self._failing = False
            with self._lock:
                if self._pending is None:
                    self._idle.set()

    def _failed(self, err: Exception) -> None:
        if not self._failing:
            log.warning("Kubeflow Trainer status server: %s: %s (progress is not reported there until it answers; "
                        "training goes on)", type(err).__name__, err)
        self._failing = True

    def _post(self, body: dict) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        if self.token_file and self._https:  # projected and rotated by the kubelet: read it each time
            with open(self.token_file) as f:
                # Not copied onto a redirect: the token is for Trainer's server alone.
                request.add_unredirected_header("Authorization", f"Bearer {f.read().strip()}")
        with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
            response.read()
