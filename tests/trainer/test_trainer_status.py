"""Progress for Kubeflow Trainer v2 (status.trainerStatus): what rank 0 sends to Trainer's status server,
over TLS with the projected token, while a real training job runs."""

import http.server
import json
import ssl
import threading

import pytest

from stilts_trainer.trainer_status import payload
from tests.cluster.harness import make_certs
from tests.conftest import job_body, run_trainer


class StatusServer:
    """Trainer's status endpoint as the trainer sees it: HTTPS, POST, a Bearer token."""

    def __init__(self, directory):
        certs = make_certs(directory, "trainer-status-ca", ["localhost"])
        self.ca = directory / "certs-trainer-status-ca" / "ca.crt"
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, self.headers.get("Authorization", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        d = directory / "certs-trainer-status-ca"
        context.load_cert_chain(d / "tls.crt", d / "tls.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = (f"https://localhost:{self.server.server_address[1]}"
                    "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ns/trainjobs/tj/status")
        assert certs


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
