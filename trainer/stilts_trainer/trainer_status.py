"""Progress for Kubeflow Trainer v2: with its TrainJobStatus feature gate on, Trainer injects the URL of
its status server, a CA and a projected token into the TrainJob's pods (KUBEFLOW_TRAINER_SERVER_*),
and whatever rank 0 POSTs there becomes the TrainJob's `status.trainerStatus`: percent done, seconds
left, and a few metrics, shown by `kubectl get trainjob -o yaml` and the Kubeflow UI.

Posting runs in a background thread at most every MIN_INTERVAL seconds, so a slow or absent server
never delays a training step; failures are logged once and otherwise ignored (progress is a courtesy,
the job's outcome does not depend on it).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
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
        self.context = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
        self._last = 0.0
        self._pending: dict | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="trainer-status", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, env=os.environ) -> "StatusReporter | None":
        return cls(env[URL], env.get(CA), env.get(TOKEN)) if env.get(URL) else None

    def report(self, step: int, total: int, eta: float | None, metrics: dict[str, float], final: bool = False):
        now = time.time()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        with self._lock:
            self._pending = payload(step, total, eta, metrics, now)
            self._idle.clear()
        self._wake.set()

    def close(self, timeout: float = 5.0) -> bool:
        """Wait (at most `timeout` seconds) until the last update is sent; whether it was."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                body, self._pending = self._pending, None
            if body is not None:
                self._post(body)
            with self._lock:
                if self._pending is None:
                    self._idle.set()

    def _post(self, body: dict) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            if self.token_file:  # projected and rotated by the kubelet: read it each time
                with open(self.token_file) as f:
                    request.add_header("Authorization", f"Bearer {f.read().strip()}")
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                response.read()
        except OSError as err:  # URLError and HTTPError included
            if not self._warned:
                log.warning("Kubeflow Trainer status server: %s (progress is not reported there; training goes on)",
                            err)
                self._warned = True
