"""Local executor: the plan's DAG as torchrun subprocesses on this machine.

Same plan, same job.json and same trainer as on a cluster; only starting and observing differ.
Checkpoints live under <root>/<experiment>/<hash>/. A job whose COMPLETE exists, here or under
another experiment in the same root, is not run again. Ctrl-C stops the running jobs (they keep
their step checkpoints); running the same command again resumes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .plan import Job, job_json, plan
from .spec import Experiment

PERMANENT_EXIT = 2  # the trainer's exit code for bad input: retrying cannot help


def find_complete(root: Path, experiment: str, job_hash: str) -> Path | None:
    """A finished copy of this job: this experiment's first, then any other's under the same root."""
    own = root / experiment / job_hash
    if (own / "COMPLETE").is_file():
        return own
    for candidate in sorted(root.glob(f"*/{job_hash}/COMPLETE")):
        return candidate.parent
    return None


@dataclass
class JobState:
    job: Job
    status: str = "pending"       # pending | running | succeeded | failed | blocked
    attempts: int = 0
    directory: Path | None = None
    process: subprocess.Popen | None = None
    not_before: float = 0.0
    started: float = 0.0
    message: str = ""
    log: Path | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalExecutor:
    experiment: Experiment
    root: Path = Path("runs")
    nproc: int = 1
    parallel: int = 0
    checkpoint_every_steps: int = 100
    echo: bool = True
    trainer: list[str] = field(default_factory=lambda: [sys.executable, "-m", "stilts_trainer"])
    states: dict[str, JobState] = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        cores = os.cpu_count() or 1
        limit = self.experiment.spec.max_concurrent_jobs
        self.parallel = min(limit, self.parallel or max(1, cores // self.nproc))
        self.cores = cores
        self.jobs = plan(self.experiment.spec)
        self.states = {j.hash: JobState(j) for j in self.jobs}
        self.dir = self.root / self.experiment.name

    # -- decisions (pure given the states) ----------------------------------------------------------
    def ready(self, now: float) -> list[JobState]:
        out = []
        for s in self.states.values():
            if s.status != "pending" or s.not_before > now:
                continue
            if all(self.states[d].status == "succeeded" for d in s.job.depends_on):
                out.append(s)
        return out

    def block_descendants(self) -> None:
        changed = True
        while changed:
            changed = False
            for s in self.states.values():
                if s.status == "pending" and any(self.states[d].status in ("failed", "blocked")
                                                 for d in s.job.depends_on):
                    s.status, s.message, changed = "blocked", "a parent failed", True

    # -- actions ------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.echo:
            counts = self.counts()
            print(f"[{counts['succeeded']}/{len(self.states)} done, {counts['running']} running, "
                  f"{counts['failed'] + counts['blocked']} failed] {text}", flush=True)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("pending", "running", "succeeded", "failed", "blocked"), 0)
        for s in self.states.values():
            out[s.status] += 1
        return out

    def write_manifest(self) -> None:
        """plan.json: what each hash is, for `stilts report` and for people."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rows = [{"hash": s.job.hash, "name": s.job.name, "phase": s.job.phase, "labels": s.job.body["labels"],
                 "parent": s.job.parent, "status": s.status, "attempts": s.attempts,
                 "directory": str(s.directory or self.dir / s.job.hash), "message": s.message}
                for s in self.states.values()]
        tmp = self.dir / ".plan.json.tmp"
        tmp.write_text(json.dumps({"experiment": self.experiment.name, "jobs": rows}, indent=2))
        os.replace(tmp, self.dir / "plan.json")

    def launch(self, s: JobState, sharing: int = 1) -> None:
        """Start one job; `sharing` jobs (this one included) split the cores between them."""
        job = s.job
        out = self.dir / job.hash
        out.mkdir(parents=True, exist_ok=True)
        parent_dir = str(self.states[job.parent].directory) if job.parent else None
        body = job_json(job, str(out), parent_dir, experiment=self.experiment.name,
                        checkpoint_every_steps=self.checkpoint_every_steps)
        (out / "job.json").write_text(json.dumps(body, indent=2))
        nproc = self.nproc if job.phase != "prefetch" else 1
        cmd = [*self.trainer, "--job", str(out / "job.json")]
        if nproc > 1:  # torchrun runs the same module: python -m torch.distributed.run ... -m stilts_trainer
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                        "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
            cmd = launcher + cmd[1:] if cmd[0] == sys.executable else launcher + ["--no-python"] + cmd
        threads = max(1, self.cores // (nproc * sharing))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        s.log = out / "train.log"
        with open(s.log, "a") as log:
            log.write(f"\n=== attempt {s.attempts + 1}: {' '.join(cmd)}\n")
            log.flush()
            s.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        s.status, s.attempts, s.started, s.directory = "running", s.attempts + 1, time.time(), out
        self.say(f"started {job.name} ({job.hash[:8]}, attempt {s.attempts}, {nproc} proc)")

    def observe(self, s: JobState) -> None:
        code = s.process.poll()
        if code is None:
            return
        s.process = None
        if code == 0 and (s.directory / "COMPLETE").is_file():
            s.status = "succeeded"
            self.say(f"finished {s.job.name} in {time.time() - s.started:.0f}s")
            return
        tail = _last_error(s.log)
        retries = self.experiment.spec.retries
        if code != PERMANENT_EXIT and s.attempts <= retries.limit:
            delay = retries.backoff_seconds * 2 ** (s.attempts - 1)
            s.status, s.not_before, s.message = "pending", time.time() + delay, tail
            self.say(f"failed {s.job.name} (exit {code}); retry in {delay}s: {tail}")
        else:
            s.status, s.message = "failed", tail
            self.say(f"FAILED {s.job.name} (exit {code}, attempts {s.attempts}): {tail}  [log: {s.log}]")
            self.block_descendants()

    def stop(self) -> None:
        for s in self.states.values():
            if s.process and s.process.poll() is None:
                os.killpg(s.process.pid, signal.SIGTERM)
        deadline = time.time() + 20
        for s in self.states.values():
            if s.process:
                try:
                    s.process.wait(max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    os.killpg(s.process.pid, signal.SIGKILL)
                s.status, s.process = "pending", None

    def run(self, poll_seconds: float = 0.5) -> bool:
        """Run the DAG to the end; True when every job succeeded."""
        for s in self.states.values():
            found = find_complete(self.root, self.experiment.name, s.job.hash)
            if found:
                s.status, s.directory = "succeeded", found
        done = self.counts()["succeeded"]
        self.say(f"{self.experiment.name}: {len(self.states)} jobs, {done} already complete; "
                 f"{self.parallel} at a time x {self.nproc} process(es)")
        try:
            while True:
                now = time.time()
                running = [s for s in self.states.values() if s.status == "running"]
                for s in running:
                    self.observe(s)
                running = [s for s in self.states.values() if s.status == "running"]
                starting = self.ready(now)[: self.parallel - len(running)]
                for s in starting:
                    self.launch(s, sharing=len(running) + len(starting))
                self.write_manifest()
                counts = self.counts()
                if counts["running"] == 0 and not any(s.status == "pending" for s in self.states.values()):
                    break
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            self.say("interrupted: stopping running jobs (their checkpoints stay; run again to resume)")
            self.stop()
            self.write_manifest()
            raise
        self.write_manifest()
        return all(s.status == "succeeded" for s in self.states.values())


def _last_error(log: Path | None) -> str:
    if not log or not log.exists():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("stilts_trainer: error:") or "Error" in line.split(":")[0]:
            return line[:300]
    return lines[-1][:300] if lines else ""
