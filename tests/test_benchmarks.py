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
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--eval", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu-benchmark.json").read_text())
    training = [k for k in figures if k.startswith(("V", "dense", "MoE"))]
    assert len(training) == 10, figures
    assert all(figures[k]["tokens_per_s"] > 0 and figures[k]["step_ms"] > 0 for k in training), figures
    assert {figures[k]["path"] for k in training} == {"autocast", "ds-bf16", "ds-zero2"}
    assert sum(figures[k]["compiled"] for k in training) == 2
    assert all(figures[k]["device_reads_per_step"] == 0 for k in training), "on CPU no tensor is a device's"
    # Kernel launches and GPU busy time come from the CUDA profiler: none on CPU.
    assert all(figures[k]["launches_per_step"] is None and figures[k]["gpu_busy"] is None for k in training)
    assert {figures[k]["zero_stage"] for k in training} == {0, 2}, "the ZeRO-2 row runs stage 2"
    # A JSON line per section as it ends: what a run cut short has measured is already printed.
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{"section"')]
    assert [line["section"] for line in lines] == ["ceiling", "checkpoint", *training, "eval"]
    assert "reads/step" in r.stdout and "launches/step" in r.stdout
    assert figures["eval"]["fp32_examples_per_s"] > 0 and figures["eval"]["prediction_agreement"] > 0.9
    assert "XNLI evaluation" in r.stdout


def test_the_gpu_benchmark_names_its_rows_when_only_matches_none():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--only", "V9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--only 'V9' names no row" in r.stderr and "V3 dense 64x4" in r.stderr


@pytest.mark.parametrize("script", ["interval_coverage.py", "sequential_design.py"])
def test_the_statistics_benchmarks_run_every_part_in_smoke_mode(script):
    """docs/statistics.md's tables come from these: a change to the report must not break them silently."""
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    parts = {row["part"] for row in rows}
    assert parts == ({1, 2} if script == "interval_coverage.py" else {1, 2, 3}), parts
