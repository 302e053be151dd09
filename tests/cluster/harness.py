"""A real control plane on loopback, the way controller-runtime's envtest does it: etcd,
kube-apiserver, kube-controller-manager (garbage collection, Jobs), the Kubeflow training operator
and, for the second backend, Kubeflow Trainer v2, JobSet and Kueue, all built from Go modules by
hack/controlplane/build.sh. No kubelet runs, so a
small pod simulator moves pods through their phases on the test's command."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.conftest import free_port  # noqa: F401 - re-exported for the cluster tests

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STILTS_CACHE_DIR", Path.home() / ".cache" / "stilts")) / "controlplane" / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "training-operator")
PYTORCHJOB_CRD = BIN / "kubeflow.org_pytorchjobs.yaml"
# The chart's restricted Worker init container: the training operator runs with it, as README tells admins.
PYTORCH_INIT_CONTAINER = REPO / "charts" / "stilts" / "files" / "pytorch-init-container.yaml"
OUR_CRD = REPO / "crds" / "stilts.dev_transferexperiments.yaml"
ADMIN_TOKEN = "stilts-admin-token"
USER_TOKEN = "stilts-user-token"


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not (BIN / b).is_file()]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()

    def alive(self) -> bool:
        return self.popen.poll() is None


def start(name: str, args: list[str], workdir: Path, env: dict | None = None) -> Process:
    log = workdir / f"{name}.log"
    handle = open(log, "w")
    popen = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
                             env={**os.environ, **(env or {})})
    return Process(name, popen, log)


def wait_until(predicate, timeout: float, what: str, process: Process | None = None, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.log.read_text()[-3000:]}")
        try:
            result = predicate()
            if result:
                return result
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(interval)
    tail = process.log.read_text()[-3000:] if process else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{tail}")


@dataclass
class ControlPlane:
    workdir: Path
    processes: list[Process] = field(default_factory=list)
    url: str = ""
    kubeconfig: Path | None = None
    user_kubeconfig: Path | None = None
    v2: "TrainerV2 | None" = None  # Trainer v2, JobSet and Kueue, once their CRDs are installed

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, controller_manager: bool = True) -> "ControlPlane":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_etcd()
        self._start_apiserver()
        if controller_manager:
            self.start_controller_manager()
        return self

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()
        self.processes.clear()

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        p = start("etcd", [str(BIN / "etcd"), "--data-dir", str(self.workdir / "etcd"),
                           "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                           "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                           "--initial-cluster", f"default=http://127.0.0.1:{peer}",
                           "--unsafe-no-fsync", "--log-level", "warn"], self.workdir)
        self.processes.append(p)
        import urllib.request
        wait_until(lambda: urllib.request.urlopen(self.etcd_url + "/health", timeout=1).status == 200, 30,
                   "etcd health", p)

    def _start_apiserver(self) -> None:
        w = self.workdir
        sa_key = w / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(w / "sa.pub")], check=True,
                       capture_output=True)
        (w / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n'
                                      f"{USER_TOKEN},alice,alice-uid\n")
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        p = start("kube-apiserver", [
            str(BIN / "kube-apiserver"), "--etcd-servers", self.etcd_url, "--cert-dir", str(w / "certs"),
            "--secure-port", str(port), "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(w / "sa.pub"), "--service-account-signing-key-file", str(sa_key),
            "--token-auth-file", str(w / "tokens.csv"), "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", "10.0.0.0/24", "--disable-admission-plugins", "ServiceAccount",
            "--allow-privileged=true", "--v", "1"], w)
        self.processes.append(p)
        self.kubeconfig = self._write_kubeconfig("admin", ADMIN_TOKEN)
        self.user_kubeconfig = self._write_kubeconfig("alice", USER_TOKEN)
        wait_until(self._ready, 60, "kube-apiserver /readyz", p)

    def _ready(self) -> bool:
        import ssl
        import urllib.request
        req = urllib.request.Request(self.url + "/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return urllib.request.urlopen(req, context=ctx, timeout=2).read() == b"ok"

    def _write_kubeconfig(self, user: str, token: str) -> Path:
        path = self.workdir / f"kubeconfig-{user}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stilts-test",
            "clusters": [{"name": "stilts-test", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "stilts-test", "context": {"cluster": "stilts-test", "user": user,
                                                            "namespace": "default"}}],
        }))
        return path

    def start_controller_manager(self) -> None:
        p = start("kube-controller-manager", [
            str(BIN / "kube-controller-manager"), "--kubeconfig", str(self.kubeconfig),
            # job: JobSet's Jobs get their pods; garbagecollector: a deleted TrainJob frees its Kueue quota
            "--controllers", "garbagecollector,namespace,clusterrole-aggregation,job", "--leader-elect=false",
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--authentication-skip-lookup", "--authorization-always-allow-paths", "/healthz,/readyz,/livez,/metrics",
            "--v", "1"], self.workdir)
        self.processes.append(p)

    # -- clients ------------------------------------------------------------------------------------
    def api_client(self, user: str = "admin"):
        from kubernetes import config
        path = self.kubeconfig if user == "admin" else self.user_kubeconfig
        return config.new_client_from_config(config_file=str(path))

    def apply_crd(self, path: Path) -> str:
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        doc = yaml.safe_load(path.read_text())
        api = client.ApiextensionsV1Api(self.api_client())
        try:
            api.create_custom_resource_definition(doc)
        except ApiException as err:
            if err.status != 409:
                raise
        name = doc["metadata"]["name"]

        def established():
            crd = api.read_custom_resource_definition(name)
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
        wait_until(established, 30, f"CRD {name} established")
        return name


def make_certs(workdir: Path, ca_name: str, dns_names: list[str], ips: tuple[str, ...] = ("127.0.0.1",)) -> dict:
    """A CA and a server certificate for a controller's webhook server, PEM (PKCS#1 keys, valid ten years,
    the CA's name also as a SAN): what cert-controller's rotators accept as "no refresh needed", so they
    do not rotate, and race, at start-up. Returns ca.crt, ca.key, tls.crt, tls.key."""
    d = workdir / f"certs-{ca_name}"
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    openssl("genrsa", "-traditional", "-out", "ca.key", "2048")
    openssl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", f"/CN={ca_name}",
            "-addext", f"subjectAltName=DNS:{ca_name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    openssl("genrsa", "-traditional", "-out", "tls.key", "2048")
    openssl("req", "-new", "-key", "tls.key", "-out", "tls.csr", "-subj", f"/CN={dns_names[0]}")
    sans = ",".join([f"DNS:{n}" for n in dns_names] + [f"IP:{i}" for i in ips])
    (d / "ext.cnf").write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                               "keyUsage=critical,digitalSignature,keyEncipherment\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "tls.crt", "-days", "3650", "-extfile", "ext.cnf")
    return {name: (d / name).read_bytes() for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}


@dataclass
class TrainingOperator:
    """The Kubeflow training operator run out of cluster, built by hack/controlplane/build.sh (docs/architecture.md,
    the test control plane)."""
    plane: ControlPlane
    namespace: str = "kubeflow"
    process: Process | None = None

    def start(self) -> "TrainingOperator":
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        api = self.plane.api_client()
        core = client.CoreV1Api(api)
        # Pre-seeded certificates: the operator's rotator finds them valid and does not rotate at start-up,
        # where a race in it (cert-controller v0.12) can panic the process ("close of closed channel").
        certs = make_certs(self.plane.workdir, "training-operator-ca",
                           [f"training-operator.{self.namespace}.svc", "localhost"])
        for create in (
            lambda: core.create_namespace({"metadata": {"name": self.namespace}}),
            lambda: core.create_namespaced_secret(self.namespace, {"metadata": {
                "name": "training-operator-webhook-cert"}, "data": {
                    k: base64.b64encode(v).decode() for k, v in certs.items()}}),
            lambda: client.AdmissionregistrationV1Api(api).create_validating_webhook_configuration({
                "metadata": {"name": "validator.training-operator.kubeflow.org"}, "webhooks": []}),
        ):
            try:
                create()
            except ApiException as err:
                if err.status != 409:
                    raise
        self.plane.apply_crd(PYTORCHJOB_CRD)
        cert_dir = Path("/tmp/k8s-webhook-server/serving-certs")  # fixed in the operator's code
        shutil.rmtree(cert_dir, ignore_errors=True)
        self.process = start("training-operator", [
            str(BIN / "training-operator"), "--kubeconfig", str(self.plane.kubeconfig),
            "--enable-scheme=pytorchjob", "--metrics-bind-address", f"127.0.0.1:{free_port()}",
            "--pytorch-init-container-template-file", str(PYTORCH_INIT_CONTAINER),
            "--health-probe-bind-address", f"127.0.0.1:{free_port()}", "--webhook-server-port", str(free_port())],
            self.plane.workdir, env={"MY_POD_NAMESPACE": self.namespace})
        self.plane.processes.append(self.process)

        def certs():
            data = core.read_namespaced_secret("training-operator-webhook-cert", self.namespace).data or {}
            return data if "tls.crt" in data else None
        data = wait_until(certs, 60, "the training operator's webhook certificate", self.process)
        cert_dir.mkdir(parents=True, exist_ok=True)
        for key in ("tls.crt", "tls.key", "ca.crt"):
            if key in data:
                (cert_dir / key).write_bytes(base64.b64decode(data[key]))
        wait_until(lambda: "pytorchjob-controller" in self.process.log.read_text()
                   and "Starting workers" in self.process.log.read_text(), 90,
                   "the PyTorchJob controller's workers", self.process)
        return self


class PodSimulator:
    """Plays the kubelet for tests: moves pods through Pending -> Running -> Succeeded/Failed via the
    pods/status subresource, with a container termination message. Pods are plain dicts (raw JSON is
    several times faster than the client's models, and a paper-scale grid has hundreds of pods)."""

    def __init__(self, api_client):
        from kubernetes import client
        self.core = client.CoreV1Api(api_client)

    def pods(self, namespace: str, selector: str) -> list[dict]:
        import json
        response = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return json.loads(response.data)["items"]

    def _patch(self, pod: dict, phase: str, container_state: dict, ready: bool) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready, "restartCount": 0,
                     "started": phase == "Running", "state": container_state} for c in pod["spec"]["containers"]]
        body = {"status": {"phase": phase, "startTime": now, "containerStatuses": statuses,
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                           "lastTransitionTime": now}]}}
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], body)

    def run(self, pod: dict) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._patch(pod, "Running", {"running": {"startedAt": now}}, True)

    def unschedulable(self, pod: dict, message: str = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.") -> None:
        """What the scheduler writes when no node fits."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": {
            "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": message, "lastTransitionTime": now}]}})

    def finish(self, pod: dict, exit_code: int = 0, message: str = "") -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "message": message, "startedAt": now, "finishedAt": now}
        self._patch(pod, "Succeeded" if exit_code == 0 else "Failed", {"terminated": terminated}, False)


V2_BINARIES = ("trainer-controller-manager", "jobset", "kueue")
MANIFESTS = BIN / "manifests"
KUEUE_NAMESPACE = "kueue-system"


def missing_v2_binaries() -> list[str]:
    return [b for b in V2_BINARIES if not (BIN / b).is_file()] + \
        [f"manifests/{m}" for m in ("jobset", "trainer", "kueue") if not (MANIFESTS / m).is_dir()]


def v2_crds() -> list[Path]:
    """JobSet's, Trainer v2's and Kueue's CRDs, as their modules ship them. Installed before the
    controller-manager starts: its garbage collector notices CRDs added later only at a 30 s resync,
    and until then a deleted TrainJob keeps its JobSet (and its Kueue quota)."""
    return sorted((MANIFESTS / "jobset").glob("jobset.x-k8s.io_*.yaml")) + \
        sorted((MANIFESTS / "trainer").glob("trainer.kubeflow.org_*.yaml")) + \
        sorted((MANIFESTS / "kueue").glob("kueue.x-k8s.io_*.yaml"))


def _controller_config(path: Path, api_version: str, port: int, health: int, **extra) -> Path:
    body = {"apiVersion": api_version, "kind": "Configuration",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"}, "metrics": {"bindAddress": "0"},
            "webhook": {"port": port, "host": "127.0.0.1", **extra.pop("webhook", {})},
            "leaderElection": {"leaderElect": False}, **extra}
    path.write_text(yaml.safe_dump(body))
    return path


def _register_webhooks(api, manifest: Path, port: int, ca: bytes, keep, prefix: str) -> None:
    """A controller's webhook configurations, pointed at its out-of-cluster server by URL (no Service
    exists), keeping only the webhooks `keep(path)` accepts: the webhooks of frameworks a controller
    does not serve must not be registered (failurePolicy Fail would block every such object)."""
    from kubernetes import client
    admission = client.AdmissionregistrationV1Api(api)
    for doc in yaml.safe_load_all(manifest.read_text()):
        if not doc or doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            path = hook["clientConfig"]["service"]["path"]
            if keep(path):
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                        "caBundle": base64.b64encode(ca).decode()}
                hooks.append(hook)
        if not hooks:
            continue
        body = {"metadata": {"name": f"{prefix}-{doc['metadata']['name']}"}, "webhooks": hooks}
        if doc["kind"] == "MutatingWebhookConfiguration":
            admission.create_mutating_webhook_configuration(body)
        else:
            admission.create_validating_webhook_configuration(body)


def _healthy(port: int) -> bool:
    import urllib.request
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200


@dataclass
class TrainerV2:
    """Kubeflow Trainer v2 (TrainJob -> JobSet), JobSet (-> Jobs, whose pods kube-controller-manager's
    job controller creates) and Kueue, run out of cluster against the test API server (built by
    hack/controlplane/build.sh), in the way found to work: one CA and server certificate for every webhook
    server, JobSet's webhooks registered (its controller needs its defaulting), Kueue's certificates
    pre-seeded and its CRDs' conversion webhooks pointed at it."""
    plane: ControlPlane
    processes: list[Process] = field(default_factory=list)

    certs: dict = field(default_factory=dict)
    kueue_port: int = 0

    def install_crds(self) -> "TrainerV2":
        """The three projects' CRDs, before kube-controller-manager starts (see v2_crds); Kueue's
        multi-version CRDs convert through its webhook, so its port and CA are fixed here."""
        self.certs = make_certs(self.plane.workdir, "kueue-ca",
                                [f"kueue-webhook-service.{KUEUE_NAMESPACE}.svc", "localhost"])
        self.kueue_port = free_port()
        for path in v2_crds():
            doc = yaml.safe_load(path.read_text())
            if len(doc["spec"]["versions"]) > 1 and path.name.startswith("kueue"):
                doc["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": f"https://127.0.0.1:{self.kueue_port}/convert",
                                     "caBundle": base64.b64encode(self.certs["ca.crt"]).decode()}}}
            patched = self.plane.workdir / f"crd-{path.name}"
            patched.write_text(yaml.safe_dump(doc))
            self.plane.apply_crd(patched)
        return self

    def start(self) -> "TrainerV2":
        from kubernetes import client
        api = self.plane.api_client()
        w = self.plane.workdir
        certs = self.certs
        cert_dir = w / "v2-certs"
        cert_dir.mkdir(exist_ok=True)
        for key in ("tls.crt", "tls.key"):
            (cert_dir / key).write_bytes(certs[key])

        # JobSet: its mutating webhook defaults what its controller dereferences.
        port, health = free_port(), free_port()
        _register_webhooks(api, MANIFESTS / "jobset" / "manifests.yaml", port, certs["ca.crt"],
                           lambda path: "jobset-x-k8s-io" in path, "jobset")
        config = _controller_config(w / "jobset.yaml", "config.jobset.x-k8s.io/v1alpha1", port, health,
                                    webhook={"certDir": str(cert_dir)}, internalCertManagement={"enable": False})
        self._run("jobset", [str(BIN / "jobset"), "--kubeconfig", str(self.plane.kubeconfig), "--config", str(config)],
                  health)

        # Trainer: its webhook server reads controller-runtime's default directory under TMPDIR.
        tmp = w / "trainer-tmp"
        serving = tmp / "k8s-webhook-server" / "serving-certs"
        serving.mkdir(parents=True, exist_ok=True)
        for key in ("tls.crt", "tls.key"):
            (serving / key).write_bytes(certs[key])
        port, health = free_port(), free_port()
        config = _controller_config(w / "trainer.yaml", "config.trainer.kubeflow.org/v1alpha1", port, health,
                                    certManagement={"enable": False})
        self._run("trainer-controller-manager", [str(BIN / "trainer-controller-manager"), "--kubeconfig",
                                                 str(self.plane.kubeconfig), "--config", str(config)],
                  health, env={"TMPDIR": str(tmp)})

        # Kueue: certificate management stays on (it loads its metrics certificates otherwise from a fixed
        # path) and finds pre-seeded, valid certificates; tls.* are copied to its certDir by hand.
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": KUEUE_NAMESPACE}})
        core.create_namespaced_secret(KUEUE_NAMESPACE, {"metadata": {"name": "kueue-webhook-server-cert"}, "data": {
            k: base64.b64encode(v).decode() for k, v in certs.items()}})
        port, health = self.kueue_port, free_port()
        _register_webhooks(api, MANIFESTS / "kueue" / "manifests.yaml", port, certs["ca.crt"],
                           lambda path: any(s in path for s in ("trainjob", "jobset", "kueue-x-k8s-io")), "kueue")
        config = _controller_config(w / "kueue.yaml", "config.kueue.x-k8s.io/v1beta2", port, health,
                                    webhook={"certDir": str(cert_dir)}, namespace=KUEUE_NAMESPACE,
                                    internalCertManagement={"enable": True},
                                    featureGates={"VisibilityOnDemand": False},
                                    integrations={"frameworks": ["trainer.kubeflow.org/trainjob",
                                                                 "jobset.x-k8s.io/jobset"]})
        kueue = self._run("kueue", [str(BIN / "kueue"), "--kubeconfig", str(self.plane.kubeconfig), "--config",
                                    str(config)], health)
        wait_until(lambda: "Certificate bootstrap complete" in kueue.log.read_text(), 60,
                   "Kueue's certificate bootstrap", kueue)
        return self

    def _run(self, name: str, args: list[str], health: int, env: dict | None = None) -> Process:
        p = start(name, args, self.plane.workdir, env=env)
        self.processes.append(p)
        self.plane.processes.append(p)
        wait_until(lambda: _healthy(health), 60, f"{name} /readyz", p)
        return p


class FakeKubelet:
    """Serves container logs the way a kubelet does, so that the real API server's pods/log proxy (what
    `kubectl logs` and `stilts logs` call) works without one: a Node whose kubelet endpoint is this
    HTTPS server on loopback, and pods bound to it. `logs(namespace, pod)` says what each pod printed."""

    NODE = "stilts-fake-node"

    def __init__(self, plane: ControlPlane, logs):
        import http.server
        import ssl
        import threading
        make_certs(plane.workdir, "fake-kubelet-ca", ["localhost"])
        d = plane.workdir / "certs-fake-kubelet-ca"
        outer = self
        self.logs = logs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # /containerLogs/<namespace>/<pod>/<container>
                parts = self.path.split("?")[0].strip("/").split("/")
                text = outer.logs(parts[1], parts[2]) if len(parts) == 4 and parts[0] == "containerLogs" else None
                body = (text or "").encode()
                self.send_response(200 if text is not None else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(d / "tls.crt", d / "tls.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        from kubernetes import client
        core = client.CoreV1Api(plane.api_client())
        try:
            core.create_node({"metadata": {"name": self.NODE}})
        except client.ApiException as err:
            if err.status != 409:
                raise
        core.patch_node_status(self.NODE, {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.server.server_address[1]}}}})
        self.core = core

    def bind(self, pod: dict) -> None:
        """What the scheduler does: the pod runs on this node from now on."""
        meta = pod["metadata"]
        self.core.create_namespaced_pod_binding(meta["name"], meta["namespace"], {
            "metadata": {"name": meta["name"]}, "target": {"kind": "Node", "name": self.NODE}},
            _preload_content=False)

    def stop(self) -> None:
        self.server.shutdown()
