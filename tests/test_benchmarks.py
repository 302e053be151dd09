"""The GPU benchmark is run on the day a GPU is lent, so it must not rot in between: its `--smoke`
mode runs every section's code path (the training loop, the MoE arm, evaluation) on CPU with a
tiny model."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_section_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu-benchmark.json").read_text())
    training = [k for k in figures if k.startswith(("dense", "moe"))]
    assert len(training) == 5, figures
    assert all(figures[k]["tokens_per_s"] > 0 and figures[k]["step_ms"] > 0 for k in training), figures
    assert {figures[k]["path"] for k in training} == {"autocast", "deepspeed"}
    assert all(figures[k]["device_reads_per_step"] == 0 for k in training), "on CPU no tensor is a device's"
    assert "reads/step" in r.stdout
    assert figures["eval"]["fp32_examples_per_s"] > 0 and figures["eval"]["prediction_agreement"] > 0.9
    assert "XNLI evaluation" in r.stdout
