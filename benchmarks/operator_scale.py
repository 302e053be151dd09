"""The operator at scale against the real API server (the Go-built test control plane): apply N
experiments of ~60 jobs each, drive every PyTorchJob to Succeeded by patching its status and
creating its rank-0 pod with the trainer's summary (no training operator, no kubelet), and report:
time until every ready job exists, jobs created per second, the time until every experiment is
Succeeded, reconcile latency p50/p95 (from the operator's histogram), and the operator's peak memory.

    .venv/bin/python benchmarks/operator_scale.py [--experiments 20]
    .venv/bin/python benchmarks/operator_scale.py --smoke   # 2 experiments of one seed and one task (a check)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client  # noqa: E402

from stilts.plan import plan  # noqa: E402
from stilts.spec import GROUP, PLURAL, VERSION, parse_spec  # noqa: E402
from tests.cluster.harness import ControlPlane, OUR_CRD, PYTORCHJOB_CRD, free_port, missing_binaries, start  # noqa: E402

SPEC = {"dataSource": "hub", "intermediateTasks": ["anli", "mnli", "qqp"], "seeds": [1, 2, 3, 4, 5],
        "maxConcurrentJobs": 60, "retries": {"limit": 1, "backoffSeconds": 1},
        "backbones": [{"name": "dense", "model": "FacebookAI/xlm-roberta-large", "gpusPerWorker": 8}]}
SMOKE_SPEC = {**SPEC, "intermediateTasks": ["mnli"], "seeds": [1]}  # the same kinds of job, fewer of each


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Upper bound of the histogram bucket holding quantile q."""
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def finish_leader(core, job: dict, now: str) -> None:
    """What the training operator and the kubelet would leave: the job's rank-0 pod, terminated with
    the trainer's summary as its termination message (success needs a valid summary of the job)."""
    labels = dict(job["metadata"]["labels"], **{"training.kubeflow.org/replica-type": "master"})
    name = f"{job['metadata']['name']}-master-0"
    core.create_namespaced_pod("bench", {"metadata": {"name": name, "labels": labels},
                                         "spec": {"containers": [{"name": "pytorch", "image": "bench"}]}})
    summary = {"phase": labels["stilts.dev/phase"], "jobHash": labels["stilts.dev/job-hash"]}
    if summary["phase"] == "evaluate":
        summary.update(test={"en": 0.8, "de": 0.7}, testItems=5010)
    terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(summary), "startedAt": now,
                  "finishedAt": now}
    core.patch_namespaced_pod_status(name, "bench", {"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "pytorch", "image": "bench", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": terminated}}]}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="2 small experiments (the suite runs it)")
    args = parser.parse_args()
    if missing_binaries():
        sys.exit(f"control-plane binaries missing: {missing_binaries()} (run `make controlplane`)")
    spec = SMOKE_SPEC if args.smoke else SPEC
    if args.smoke:
        args.experiments = 2
    per_experiment = len(plan(parse_spec(spec)))
    workdir = Path(tempfile.mkdtemp(prefix="stilts-operator-scale-"))
    plane = ControlPlane(workdir)
    try:
        plane.start(controller_manager=False)
        plane.apply_crd(OUR_CRD)
        plane.apply_crd(PYTORCHJOB_CRD)
        port = free_port()
        op = start("operator", [sys.executable, "-m", "stilts.cli", "operator"], plane.workdir,
                   env={"KUBECONFIG": str(plane.kubeconfig), "STILTS_METRICS_PORT": str(port),
                        "STILTS_HEALTH_PORT": str(free_port()), "STILTS_RESYNC_SECONDS": "10"})
        plane.processes.append(op)
        api = plane.api_client()
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "bench"}})
        time.sleep(3)  # the operator's watches are up
        started = time.time()
        for i in range(args.experiments):
            custom.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "TransferExperiment", "metadata": {"name": f"x{i}"},
                "spec": spec})
        total = args.experiments * per_experiment
        seen: dict[str, float] = {}
        done: set[str] = set()
        first_wave = None
        rounds = []
        while len(done) < total and time.time() - started < 1200:
            jobs = custom.list_namespaced_custom_object("kubeflow.org", "v1", "bench", "pytorchjobs")["items"]
            now = time.time()
            for job in jobs:
                seen.setdefault(job["metadata"]["name"], now)
            pending = [j for j in jobs if j["metadata"]["name"] not in done]
            if first_wave is None and len(seen) >= args.experiments:
                first_wave = now - started
            if not pending:
                time.sleep(0.2)
                continue
            rounds.append((now, len(pending)))
            for job in pending:  # every existing child succeeds: the next wave becomes ready
                t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                finish_leader(core, job, t)
                custom.patch_namespaced_custom_object_status(
                    "kubeflow.org", "v1", "bench", "pytorchjobs", job["metadata"]["name"],
                    {"status": {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Bench",
                                                "message": "", "lastUpdateTime": t, "lastTransitionTime": t}]}})
                done.add(job["metadata"]["name"])
        created = time.time() - started

        def phases() -> list[str]:
            return [(custom.get_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, f"x{i}").get("status") or {})
                    .get("phase") for i in range(args.experiments)]
        while phases().count("Succeeded") < args.experiments and time.time() - started < 1200:
            time.sleep(0.5)
        elapsed = time.time() - started
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        buckets = [(float("inf") if m[0] == "+Inf" else float(m[0]), float(m[1])) for m in
                   re.findall(r'stilts_reconcile_duration_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text)]
        reconciles = int(buckets[-1][1])
        rss = next(line.split()[1] for line in Path(f"/proc/{op.popen.pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM"))
        final = phases()
        print(f"{args.experiments} experiments x {per_experiment} jobs = {total} PyTorchJobs, real kube-apiserver, "
              f"2 cores")
        print(f"first ready job of every experiment exists after {first_wave:.1f} s")
        print(f"all {len(seen)} jobs created and succeeded in {created:.1f} s "
              f"({len(seen) / created:.1f} jobs created per second, waves of ready jobs included); "
              f"every experiment Succeeded after {elapsed:.1f} s")
        within = {bound: count / reconciles for bound, count in buckets}
        print(f"reconciles {reconciles}; latency p50 <= {quantile(buckets, 0.5) * 1000:.0f} ms, "
              f"p95 <= {quantile(buckets, 0.95) * 1000:.0f} ms (histogram bucket bounds); within 100 ms "
              f"{within[0.1]:.0%}, 200 ms {within[0.2]:.0%}, 500 ms {within[0.5]:.0%}")
        print(f"operator peak memory (VmHWM) {int(rss) / 1024:.0f} MiB; experiments Succeeded: "
              f"{final.count('Succeeded')}/{len(final)}")
    finally:
        plane.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # etcd's data; kept, with the logs, when a run fails


if __name__ == "__main__":
    main()
