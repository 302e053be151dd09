"""Benchmarks run rarely (the GPU one on the day a GPU is lent), so they must not rot in between:
every script's `--smoke` mode runs its code paths at tiny sizes on CPU (the GPU benchmark's: the
training loop, the MoE arm, evaluation, with a tiny model)."""

import json
import os
import re
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


def require_control_plane() -> None:
    """As tests/cluster do: missing binaries skip here, and fail on CI, where `make test` builds them."""
    from tests.cluster.harness import missing_binaries
    missing = missing_binaries()
    if missing:
        message = f"control-plane binaries missing: {', '.join(missing)} (run `make controlplane`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# Each script's figure lines, as a pattern per line it always prints: the figures change, the lines do not.
# Marked slow where a smoke takes more than about 20 s here (2 cores).
CHECKPOINT_LINES = [r"^model: XLM-R-large width, 1 layers", r"^save \(commit path.*ratio \d",
                    r"^save without the fsyncs:", r"^load \(resume path.*ratio \d", r"^load breakdown: torch.load",
                    r"^checkpoint files still mapped after the load: 0$"]  # not a figure: mapped files keep their space
DATA_CACHE_LINES = [r"^  cache off \(every rank encodes\) .* s \(data", r"^  second job \(maps the cache\)",
                    r"^  multitask, second job", r"^second job vs cache off: first step [\d.]+x",
                    r"^peak RSS per rank, second job: \d+ MiB", r"^cache on the volume:"]
DEMO_LINES = [r"^demo grid: \d+ jobs", r"^phase +jobs", r"^critical path:",
              *(rf"^{phase} +\d+ +[\d.]+ +[\d.]+" for phase in ("pretrain", "intermediate", "target", "evaluate"))]
HOST_MEMORY_LINES = [r"checkpoint [\d.]+ GiB", r"^  runtime only .* peak +[\d.]+ GiB", r"^  \+ the encoder.* peak",
                     r"^  \+ the masked-LM.* peak"]
MOE_LINES = [r"^config +step ms +tokens/s", r"^dense +[\d.]+ +\d+ +1\.00x",
             *(rf"^moe top-{k} ep={ep} +[\d.]+ +\d+ +[\d.]+x" for k in (1, 2) for ep in (1, 2))]
NOISE_LINES = [r"^pretrained model and seed 1 by `stilts run`: \d+ s",
               r"seed 1 in-process matches the executor's: yes\)$",  # else the runs would not isolate the seed
               *(rf"^\| {what}[^|]* \| 2 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+-[\d.]+ \|$"
                 for what in ("which MNLI", "the order", "the classification head", "all three"))]
OPERATOR_LINES = [r"^2 experiments x \d+ jobs", r"^all \d+ jobs created and succeeded", r"^reconciles \d+; latency p50",
                  r"experiments Succeeded: 2/2$"]
TRAINER_LINES = [r"^training tokens/s .* ratio [\d.]+", r"^  both grouping .* ratio", r"^  bare PyTorch loop",
                 r"^evaluation ex/s .* ratio [\d.]+"]
SMOKES = [
    pytest.param("checkpoint_io.py", CHECKPOINT_LINES, id="checkpoint_io"),
    pytest.param("data_cache.py", DATA_CACHE_LINES, id="data_cache", marks=pytest.mark.slow),
    pytest.param("demo_time.py", DEMO_LINES, id="demo_time", marks=pytest.mark.slow),
    pytest.param("host_memory.py", HOST_MEMORY_LINES, id="host_memory", marks=pytest.mark.slow),
    pytest.param("moe_throughput.py", MOE_LINES, id="moe_throughput", marks=pytest.mark.slow),
    pytest.param("operator_scale.py", OPERATOR_LINES, id="operator_scale", marks=pytest.mark.cluster),
    pytest.param("seed_noise.py", NOISE_LINES, id="seed_noise", marks=pytest.mark.slow),
    pytest.param("trainer_throughput.py", TRAINER_LINES, id="trainer_throughput", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("script, lines", SMOKES)
def test_every_benchmark_runs_its_smoke_mode(script, lines, tmp_path):
    """Benchmarks run rarely, so they rot between runs unless the suite runs them: the same code
    paths at tiny sizes, the figure lines checked for shape, never for value."""
    if script == "operator_scale.py":
        require_control_plane()
    where = {"checkpoint_io.py": ["--dir", str(tmp_path)], "demo_time.py": ["--root", str(tmp_path)],
             "seed_noise.py": ["--root", str(tmp_path)]}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke", *where.get(script, [])],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    missing = [p for p in lines if not re.search(p, r.stdout, re.MULTILINE)]
    assert not missing, f"{missing} not in:\n{r.stdout}"
