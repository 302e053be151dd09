"""Shared helpers: job files and launching the trainer as users do (python -m / torchrun)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer_command(job_path: Path, nproc: int = 1, nnodes: int = 1, node_rank: int = 0,
                    port: int | None = None) -> list[str]:
    if nproc == 1 and nnodes == 1:
        return [sys.executable, "-m", "stilts_trainer", "--job", str(job_path)]
    return [sys.executable, "-m", "stilts_trainer.launch", "--nproc-per-node", str(nproc), "--nnodes", str(nnodes),
            "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port or free_port()),
            "-m", "stilts_trainer", "--job", str(job_path)]


def run_trainer(job: dict, tmp: Path, nproc: int = 1, env: dict | None = None, timeout: int = 600,
                name: str = "job.json") -> subprocess.CompletedProcess:
    path = tmp / name
    path.write_text(json.dumps(job))
    return subprocess.run(trainer_command(path, nproc), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


TINY_TRAINING = {"learningRate": 5e-4, "batchSize": 32, "microBatchSize": 16, "epochs": 1, "maxSeqLength": 48,
                 "evalEverySteps": 40, "evalExamples": 200, "earlyStoppingPatience": 3}


def job_body(phase: str, output: Path, parent: Path | None = None, **extra) -> dict:
    body = {"phase": phase, "backbone": {"name": "dense", "model": "stilts/tiny-xlmr"}, "dataSource": "synthetic",
            "output": str(output), "parent": str(parent) if parent else None,
            "hyperparameters": dict(TINY_TRAINING), "checkpointEverySteps": 1000}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory) -> Path:
    """One tiny backbone for the session's tests (a real pretrain job, 1 process)."""
    out = tmp_path_factory.mktemp("pretrain") / "out"
    job = job_body("pretrain", out, hyperparameters={"learningRate": 1e-3, "batchSize": 64, "microBatchSize": 64,
                                                     "maxSteps": 120, "maxSeqLength": 48})
    result = run_trainer(job, out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def kill_naming(path: Path) -> None:
    """SIGKILL every process whose command line names `path`: all of a job's processes, as a node failure
    would take them (torchrun starts its workers in sessions of their own, out of reach of a killpg)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(path) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):  # gone meanwhile, or not ours
            pass


def holding(path: Path) -> set[int]:
    """Processes with a file under `path` open (a trainer holds its job's train.log as stdout): the check that
    finds a forked trainer, whose command line names no path."""
    prefix = str(Path(path).resolve()) + os.sep
    found = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(fd).startswith(prefix):
                    found.add(int(fd_dir.parent.name))
                    break
            except OSError:  # this descriptor closed meanwhile; the others still count
                continue
    return found - {os.getpid()}
