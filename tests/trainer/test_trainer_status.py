"""Progress for Kubeflow Trainer v2 (status.trainerStatus): what rank 0 sends to Trainer's status server,
over TLS with the projected token, while a real training job runs; and that nothing about it (a bad CA file, a
server that answers garbage) can stop training or silence it for good, nor send the token where it does not belong."""

import http.server
import json
import logging
import socket
import ssl
import threading

import pytest

from stilts_trainer.trainer_status import StatusReporter, payload
from tests.cluster.harness import make_certs
from tests.conftest import job_body, run_trainer

PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ns/trainjobs/tj/status"


class StatusServer:
    """Trainer's status endpoint as the trainer sees it: HTTPS, POST, a Bearer token. With `redirect`, a POST is
    answered 303 to that path; with tls=False it is plain HTTP."""

    def __init__(self, directory, tls: bool = True, redirect: str | None = None):
        self.requests: list[tuple[str, str, dict | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, self.headers.get("Authorization", ""), body))
                if redirect:
                    self.send_response(303)
                    self.send_header("Location", redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self):  # where a redirect lands
                outer.requests.append((self.path, self.headers.get("Authorization", ""), None))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            assert make_certs(directory, "trainer-status-ca", ["localhost"])
            self.ca = directory / "certs-trainer-status-ca" / "ca.crt"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            d = directory / "certs-trainer-status-ca"
            context.load_cert_chain(d / "tls.crt", d / "tls.key")
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"{'https' if tls else 'http'}://localhost:{self.server.server_address[1]}{PATH}"


def test_the_payload_fits_the_trainjob_api():
    body = payload(7, 20, 12.6, {"loss": 0.123456789, "a" * 80: 1.0}, 0)["trainerStatus"]
    assert body["progressPercentage"] == 35 and body["estimatedRemainingSeconds"] == 13
    assert body["metrics"][0] == {"name": "loss", "value": "0.123457"} and len(body["metrics"][1]["name"]) == 64
    assert body["lastUpdatedTime"] == "1970-01-01T00:00:00Z"
    assert "estimatedRemainingSeconds" not in payload(0, 20, None, {}, 0)["trainerStatus"]


@pytest.mark.slow
def test_a_training_job_reports_progress_to_trainers_status_server(tmp_path, pretrained):
    server = StatusServer(tmp_path)
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    out = tmp_path / "target"
    body = job_body("target", out, pretrained, task="mnli",
                    hyperparameters={"maxSteps": 20, "evalEverySteps": 10, "evalExamples": 64, "maxTrainExamples": 800})
    r = run_trainer(body, tmp_path, env={"KUBEFLOW_TRAINER_SERVER_URL": server.url,
                                         "KUBEFLOW_TRAINER_SERVER_CA_CERT": str(server.ca),
                                         "KUBEFLOW_TRAINER_SERVER_TOKEN": str(token)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(server.requests) >= 2, "the first report and the last"
    paths, tokens, bodies = zip(*server.requests)
    assert set(paths) == {"/apis/trainer.kubeflow.org/v1alpha1/namespaces/ns/trainjobs/tj/status"}
    assert set(tokens) == {"Bearer projected-token"}
    first, last = bodies[0]["trainerStatus"], bodies[-1]["trainerStatus"]
    assert first["progressPercentage"] == 5 and last["progressPercentage"] == 100  # step 1 of 20, then done
    assert last["estimatedRemainingSeconds"] == 0
    names = {m["name"] for m in last["metrics"]}
    assert {"loss", "learningRate", "tokensPerSecond", "devScore"} <= names


@pytest.mark.parametrize("content", [None, b"not a certificate\n", b""], ids=["missing", "garbage", "empty"])
def test_a_bad_ca_file_turns_progress_off_with_a_warning_and_never_stops_the_phase(tmp_path, monkeypatch, caplog,
                                                                                  content):
    ca = tmp_path / "ca.crt"
    if content is not None:
        ca.write_bytes(content)
    monkeypatch.setenv("KUBEFLOW_TRAINER_SERVER_URL", "https://localhost:1" + PATH)
    monkeypatch.setenv("KUBEFLOW_TRAINER_SERVER_CA_CERT", str(ca))
    with caplog.at_level(logging.WARNING, logger="stilts_trainer"):
        assert StatusReporter.from_env() is None
        reporter = StatusReporter("https://localhost:1" + PATH, str(ca), None)  # the constructor itself
    assert not reporter.enabled and str(ca) in caplog.text and "training goes on" in caplog.text
    reporter.report(1, 10, None, {"loss": 1.0}, final=True)  # a no-op, as is close
    assert reporter.close(0)
    from stilts_trainer.metrics import TrainerMetrics

    metrics = TrainerMetrics({"experiment": "e", "job_hash": "h", "phase": "target", "backbone": "b", "task": "t"})
    assert metrics.status is None
    metrics.close()


def test_the_token_goes_over_https_only(tmp_path):
    server = StatusServer(tmp_path, tls=False)
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    reporter = StatusReporter(server.url, None, str(token), interval=0)
    reporter.report(1, 10, 5.0, {"loss": 1.0}, final=True)
    assert reporter.close(10)
    assert [(path, auth) for path, auth, _ in server.requests] == [(PATH, "")], "progress, without the token"


def test_the_token_is_not_sent_where_a_redirect_points(tmp_path):
    server = StatusServer(tmp_path, redirect="/elsewhere")
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    reporter = StatusReporter(server.url, str(server.ca), str(token), interval=0)
    reporter.report(1, 10, 5.0, {"loss": 1.0}, final=True)
    assert reporter.close(10)
    assert [(path, auth) for path, auth, _ in server.requests] == [(PATH, "Bearer projected-token"), ("/elsewhere", "")]


class GarbageThenGood:
    """A server that first answers with no HTTP status line at all (http.client.BadStatusLine: an HTTPException,
    not an OSError), then as it should."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.bodies: list[bytes] = []
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}{PATH}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        for answer in (b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"):
            conn, _ = self.listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(65536)
                self.bodies.append(body)
                conn.sendall(answer)


def test_a_malformed_answer_is_logged_and_the_next_update_is_still_sent(caplog):
    server = GarbageThenGood()
    reporter = StatusReporter(server.url, None, None, interval=0)
    with caplog.at_level(logging.INFO, logger="stilts_trainer"):
        reporter.report(1, 10, 5.0, {"loss": 1.0}, final=True)
        assert reporter.close(10), "the failed update was handled (the thread did not die with it)"
        assert "BadStatusLine" in caplog.text
        reporter.report(2, 10, 4.0, {"loss": 0.5}, final=True)
        assert reporter.close(10)
    assert [json.loads(b)["trainerStatus"]["progressPercentage"] for b in server.bodies] == [10, 20]
    assert reporter._thread.is_alive() and "reachable again" in caplog.text
