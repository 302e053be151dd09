"""A real Prometheus (Debian's) scrapes the operator and a running trainer, and every query of the
Grafana dashboard returns data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.chart.test_chart import CHART
from tests.conftest import job_body

from .harness import free_port, start, wait_until
from .test_operator import SEQUENTIAL, Operator, PodDriver, create, experiment, phase_is

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
PROMETHEUS = shutil.which("prometheus")


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_every_dashboard_query_returns_data(control_plane, training_operator, pod_simulator, namespace, tmp_path,
                                            pretrained):
    if not PROMETHEUS:
        message = "prometheus not installed (make test installs Debian's package when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from .harness import FakeKubelet
    from tests.operator import world_trainer

    op = Operator(control_plane).start()
    trainer = kubelet = None
    try:
        # A sequential experiment (the answer panels), its pods' logs served so that its looks are sharp.
        doc = experiment(**SEQUENTIAL)
        doc["spec"].pop("seeds", None)
        create(control_plane, namespace, doc)
        driver = PodDriver(control_plane, pod_simulator, namespace, world=True, node=FakeKubelet.NODE)
        kubelet = FakeKubelet(control_plane, lambda ns, pod: world_trainer.log(driver.job_json(
            pod_simulator.core.read_namespaced_pod(pod, ns).metadata.labels[driver.child_label])))
        driver.run_until(phase_is(control_plane, namespace, "Succeeded"), timeout=600)

        # A real trainer process serving its metrics: an MoE target job of the same experiment.
        trainer_port = free_port()
        job = job_body("target", tmp_path / "trainer", pretrained, task="mnli", experiment="exp",
                       metricsPort=trainer_port, hyperparameters={"maxSteps": 100000, "evalEverySteps": 100000},
                       backbone={"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
                                 "moe": {"experts": 4, "expertParallelSize": 1}})
        (tmp_path / "job.json").write_text(json.dumps(job))
        trainer = subprocess.Popen([sys.executable, "-m", "stilts_trainer", "--job", str(tmp_path / "job.json")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})

        def trainer_serving():
            text = urllib.request.urlopen(f"http://127.0.0.1:{trainer_port}/metrics", timeout=2).read().decode()
            return "stilts_trainer_moe_expert_token_share{" in text
        wait_until(trainer_serving, 180, "the trainer's metrics endpoint")

        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "stilts-operator", "static_configs": [{"targets": [f"127.0.0.1:{op.port}"]}]},
                {"job_name": "stilts-trainer", "static_configs": [{"targets": [f"127.0.0.1:{trainer_port}"]}]},
            ]}))
        prom = start("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path)
        control_plane.processes.append(prom)
        wait_until(lambda: len(query(prom_port, "up == 1")) == 2, 60, "prometheus scraping both targets", prom)
        time.sleep(4)  # a few scrapes, so that rate() has two points

        dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
        empty = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$experiment", "exp").replace("$backbone", ".*")
                if not query(prom_port, expr):
                    empty.append(f"{panel['title']}: {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
        gains = query(prom_port, 'stilts_xnli_gain{experiment="exp"}')
        assert {g["metric"]["language"] for g in gains} == set(world_trainer.LANGUAGES)
        widths = query(prom_port, 'stilts_answer_half_width_points{experiment="exp"}')
        assert {w["metric"]["comparison"] for w in widths} == {"moe-vs-dense/anli", "moe-vs-dense/qqp"}
    finally:
        if trainer:
            trainer.kill()
            trainer.wait()
        if kubelet:
            kubelet.stop()
        op.stop()
