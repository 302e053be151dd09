"""Local executor: the plan's DAG as trainer processes on this machine.

The same plan, job.json, trainer and scheduler (reconcile.py) as on a cluster; only what a child is
differs: here a process (torchrun when the job has more than one), observed through its exit code
and its COMPLETE marker. Checkpoints live under <root>/<experiment>/<hash>/. A job whose COMPLETE
exists, here or under another experiment in the same root, is not run again. Ctrl-C stops the
running jobs (they keep their step checkpoints); running the same command again resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stilts_contract import rules, summary as summaries
from stilts_contract.names import (COMPLETE, PROGRESS, TRAIN_LOG, Exit, is_permanent, is_preempted,
                                   shutdown_timeout)

from . import answer, tracking
from .plan import Job, job_json, plan
from .reconcile import ACTIVE, Observed, Policy, counts, evaluations_ended, reconcile
from .report import ANSWER_FILE
from .spec import Experiment, SpecError
from .status import eta


DEFAULT_TRAINER = (sys.executable, "-m", "stilts_trainer")


def find_complete(root: Path, experiment: str, job_hash: str) -> Path | None:
    """A finished copy of this job: this experiment's first, then any other's under the same root."""
    own = root / experiment / job_hash
    if (own / COMPLETE).is_file():
        return own
    for candidate in sorted(root.glob(f"*/{job_hash}/{COMPLETE}")):
        return candidate.parent
    return None


def _earlier_rows(manifest: Path) -> dict[str, dict]:
    try:
        return {row["hash"]: row for row in json.loads(manifest.read_text())["jobs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _trainer_seconds(directory: Path) -> float | None:
    try:
        return json.loads((directory / COMPLETE).read_text()).get("seconds")
    except (OSError, ValueError, AttributeError):
        return None


def world_sizes(jobs: list[Job], nproc: int | None) -> dict[str, int]:
    """Processes per job: the planned world size (workers x processes per worker), or `nproc` for every
    training job when given, if every rule the trainer applies at start-up still holds with it."""
    sizes = {}
    for job in jobs:
        planned = job.launch.world
        size = 1 if job.phase == "prefetch" else (nproc or planned)
        if size != planned and job.phase != "evaluate":
            hp, moe = job.job.hyperparameters, job.job.backbone.moe_settings
            problem = rules.batch_fits_world(hp.batch_size, hp.micro_batch_size, size) or (
                moe and job.phase != "prefetch" and rules.ep_divides_world(moe.expert_parallel_size, size))
            if problem:
                raise SpecError(f"--nproc {size}: job {job.name} was planned for {planned} processes, and with "
                                f"{size}: {problem}. Leave --nproc out to run each job with its planned world "
                                "size, or change the spec")
        sizes[job.hash] = size
    return sizes


def local_cache_dir() -> str:
    """Hugging Face's own datasets cache, where the trainer also keeps encoded training sets (feature_cache.py):
    shared by every local run, each entry named by a fingerprint of what made it."""
    return os.environ.get("HF_DATASETS_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "datasets")


class ForkedTrainer:
    """A one-process trainer forked from a server that has imported torch, DeepSpeed and the trainer
    once, so a job starts in a fraction of a second instead of several (process start and imports were
    a fifth of the demo's time). It runs the same `main` as `python -m stilts_trainer`; the interface is
    Popen's, as far as the executor uses it."""

    _context = None

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]):
        import multiprocessing

        if ForkedTrainer._context is None:
            ForkedTrainer._context = multiprocessing.get_context("forkserver")
            ForkedTrainer._context.set_forkserver_preload(["stilts_trainer.phases"])
        self._process = ForkedTrainer._context.Process(target=_forked_main, args=(argv, str(log), env), daemon=False)
        self._process.start()
        self.pid = self._process.pid
        self._started = _start_time(self.pid)

    def poll(self) -> int | None:
        code = self._process.exitcode
        # The exit code comes through the forkserver, and multiprocessing reads 255 when the server died: a
        # signal to the whole process group (`timeout`, a hangup) kills it, while the trainer, in a session
        # of its own, trains on. Then running is what the trainer's pid says.
        return None if code == 255 and self._started and _start_time(self.pid) == self._started else code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.time() + timeout
        self._process.join(timeout)
        while (code := self.poll()) is None:
            if deadline is not None and time.time() >= deadline:
                raise subprocess.TimeoutExpired("stilts_trainer", timeout)
            time.sleep(0.05)
        return code


def _start_time(pid: int) -> str:
    """When the process started, while it runs ("" once it has exited or is gone): it tells the process
    from a later one given the same pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] in ("Z", "X") else fields[19]


def _forked_main(argv: list[str], log: str, env: dict[str, str]) -> None:
    os.setsid()  # its own process group, as a subprocess gets: Ctrl-C and kills reach it alone
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update(env)
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    from stilts_trainer.__main__ import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


@dataclass
class Child:
    """One attempt of one job: its process and where it logs."""
    job: Job
    attempt: int
    process: subprocess.Popen | ForkedTrainer
    log: Path
    started: float


@dataclass
class LocalExecutor:
    experiment: Experiment
    root: Path = Path("runs")
    nproc: int | None = None
    parallel: int = 0
    checkpoint_every_steps: int = 100
    echo: bool = True
    trainer: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINER))
    mlflow: str | None = None  # --mlflow: a tracking URI, "" for a store under the root (tracking.py)

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.dir = self.root / self.experiment.name
        self.tracking = tracking.local_settings(self.experiment.spec, self.mlflow, self.root, self.experiment.name)
        self.design = answer.Design.of(self.experiment.spec)
        self.notice = ""
        self.looks = self._saved_looks()
        self._replan()
        self.cores = os.cpu_count() or 1
        # The widest job the design may ever plan sets the parallelism (later waves have the same shapes).
        widest = max(self.sizes.values())
        self.policy = Policy.of(self.experiment.spec, self.parallel or max(1, self.cores // widest))
        self.records: dict[str, dict] = {}
        self.cpus: dict[str, int] = {}  # cores each job was given (its cost, in CPU-hours)
        self.live = None  # rich's live progress, on a terminal
        self.live_tasks: dict[str, int] = {}
        self.directories: dict[str, Path] = {}
        self.children: dict[str, Child] = {}
        self.results: dict[str, dict] = {}

    @staticmethod
    def child_name(job_hash: str, attempt: int) -> str:
        return f"{job_hash}-{attempt}"

    # -- the sequential design -------------------------------------------------------------------------
    def _replan(self) -> None:
        """The plan of the seeds released so far (all of spec.seeds without a design)."""
        self.jobs = plan(self.experiment.spec, self.looks)
        self.by_hash = {j.hash: j for j in self.jobs}
        self.sizes = world_sizes(self.jobs, self.nproc)

    def _saved_looks(self) -> list[dict]:
        """The looks of an earlier `stilts run` of the same design. Another design (an edited answer block)
        starts from no look: finished jobs are found again, so its looks replay in seconds."""
        path = self.dir / ANSWER_FILE
        if self.design is None or not path.is_file():
            return []
        saved = json.loads(path.read_text())
        if saved.get("design") != asdict(self.design):
            self.notice = f"{ANSWER_FILE}: the answer block changed since the last run; its looks are taken again"
            return []
        return saved.get("looks", [])

    def _save_looks(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{ANSWER_FILE}.tmp"
        tmp.write_text(json.dumps({"design": asdict(self.design), "looks": self.looks}, indent=2))
        os.replace(tmp, self.dir / ANSWER_FILE)

    def _look_due(self) -> bool:
        planned = max((j.seed for j in self.jobs if j.phase == "evaluate" and j.seed is not None), default=0)
        return answer.due(self.design, self.looks, evaluations_ended(self.jobs, self.records), planned)

    def look(self, records: dict, results: dict) -> dict | None:
        """The look that is due: the report of this run directory, as `stilts report` would make it."""
        from .report import from_directory

        self.records = records
        self.write_manifest()
        inputs = from_directory(self.dir, design=self.design)
        inputs.looks = list(self.looks)
        return answer.take(inputs, time.time())

    # -- observing -----------------------------------------------------------------------------------
    def observe(self) -> dict[str, Observed]:
        observed = {}
        for name, child in self.children.items():
            code = child.process.poll()
            if code is None:
                observed[name] = Observed("Running")
                continue
            out = self.dir / child.job.hash
            if code == Exit.OK:
                text = (out / COMPLETE).read_text() if (out / COMPLETE).is_file() else ""
                observed[name] = Observed("Succeeded", summary=summaries.encode(json.loads(text)) if text else "")
            else:
                reason = ("BadInput" if is_permanent(code) else "Preempted" if is_preempted(code)
                          else f"Exit{code}" if code > 0 else f"Signal{-code}")
                observed[name] = Observed("Failed", permanent=is_permanent(code), preempted=is_preempted(code),
                                          reason=reason,
                                          message=f"{last_error(child.log)}  [log: {child.log}]")
        return observed

    # -- acting --------------------------------------------------------------------------------------
    def launch(self, job: Job, attempt: int, sharing: int) -> None:
        """Start one attempt; `sharing` jobs (this one included) split the cores between them."""
        out = self.dir / job.hash
        out.mkdir(parents=True, exist_ok=True)
        parent_dir = str(self.directories[job.parent]) if job.parent else None
        body = job_json(job, str(out), parent_dir, experiment=self.experiment.name,
                        checkpoint_every_steps=self.checkpoint_every_steps, cache_dir=local_cache_dir(),
                        tracking=self.tracking)
        (out / "job.json").write_text(json.dumps(body, indent=2))
        nproc = self.sizes[job.hash]
        cmd = [*self.trainer, "--job", str(out / "job.json")]
        if nproc > 1:  # torchrun, keeping the trainer's exit codes: python -m stilts_trainer.launch ... -m stilts_trainer
            launcher = [sys.executable, "-m", "stilts_trainer.launch", "--standalone", "--nproc-per-node", str(nproc)]
            cmd = launcher + cmd[1:] if cmd[0] == sys.executable else launcher + ["--no-python"] + cmd
        threads = max(1, self.cores // (nproc * sharing))
        # torchrun gives its workers what a pod would (stop() waits the grace before SIGKILL)
        grace = self.experiment.spec.scheduling.termination_grace_period_seconds
        own = {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "STILTS_ATTEMPT": str(attempt)}
        env = {**os.environ, **own, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(shutdown_timeout(grace))}
        log = out / TRAIN_LOG
        with open(log, "a") as handle:
            handle.write(f"\n=== attempt {attempt}: {' '.join(cmd)}\n")
        if nproc == 1 and tuple(self.trainer) == DEFAULT_TRAINER:
            process = ForkedTrainer(cmd[3:], log, own)
        else:
            with open(log, "a") as handle:
                process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
        self.children[self.child_name(job.hash, attempt)] = Child(job, attempt, process, log, time.time())
        self.directories[job.hash] = out
        self.cpus[job.hash] = nproc * threads
        self.say(f"started {job.name} ({job.hash[:8]}, attempt {attempt}, {nproc} proc)")

    def kill(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child and child.process.poll() is None:
            _signal(child.process.pid, signal.SIGTERM)
            child.process.wait()

    def stop(self) -> None:
        """SIGTERM to every running job (each finishes its step and commits a checkpoint), SIGKILL to those
        still running after the grace a trainer pod gets on the cluster (spec.scheduling.
        terminationGracePeriodSeconds), or at once on a second Ctrl-C."""
        running = [c for c in self.children.values() if c.process.poll() is None]
        for child in running:
            _signal(child.process.pid, signal.SIGTERM)
        deadline = time.time() + self.experiment.spec.scheduling.termination_grace_period_seconds
        try:
            for child in running:
                try:
                    child.process.wait(max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            self.say("interrupted again: killing the running jobs now (each resumes from its last checkpoint)")
        for child in running:
            if child.process.poll() is None:
                _signal(child.process.pid, signal.SIGKILL)
                try:
                    child.process.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.children.clear()

    def say(self, text: str) -> None:
        if self.echo:
            c = counts(self.records)
            line = (f"[{c['Succeeded']}/{len(self.jobs)} done, {sum(c[s] for s in ACTIVE)} running, "
                    f"{c['Failed'] + c['Blocked']} failed] {text}")
            try:
                if self.live:
                    self.live.console.print(line, highlight=False)
                else:
                    print(line, flush=True)
            except OSError:  # the terminal hung up, or the pipe's reader died: stopping must go on without it
                self.echo = False

    def show_progress(self, now: float) -> None:
        """On a terminal: a bar per running job (step / total, the trainer's ETA) and one for the grid."""
        if not self.live:
            return
        tasks = self.live_tasks
        if "grid" not in tasks:
            tasks["grid"] = self.live.add_task(self.experiment.name, total=len(self.jobs), eta="")
        left = eta(self.jobs, self.records, self.policy.max_active)
        self.live.update(tasks["grid"], completed=counts(self.records)["Succeeded"],
                         eta=f"{left:.0f}s" if left is not None else "")
        running = {name: child for name, child in self.children.items() if child.process.poll() is None}
        for name in [n for n in tasks if n != "grid" and n not in running]:
            self.live.remove_task(tasks.pop(name))
        for name, child in running.items():
            progress = self.dir / child.job.hash / PROGRESS
            try:
                p = json.loads(progress.read_text()) if progress.is_file() else {}
            except (OSError, json.JSONDecodeError):  # written atomically; a read may still race a rename
                p = {}
            if name not in tasks:
                tasks[name] = self.live.add_task(child.job.name, total=None, eta="")
            if p.get("total") and p.get("time", 0) >= child.started:
                self.live.update(tasks[name], total=p["total"], completed=p["step"],
                                 eta=f"{p['eta']:.0f}s" if p.get("eta") is not None else "")

    def write_manifest(self) -> None:
        """plan.json: what each hash is and how it went, for `stilts report` and for people."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for job in self.jobs:
            rec = self.records.get(job.hash, {})
            rows.append({"hash": job.hash, "name": job.name, "phase": job.phase, "labels": job.job.labels,
                         "parent": job.parent, "status": rec.get("state", "Pending"),
                         "attempts": rec.get("attempts", 0), "message": rec.get("message", ""),
                         "created": rec.get("created"), "finished": rec.get("since") if rec.get("state") ==
                         "Succeeded" and rec.get("created") else None, "cpus": self.cpus.get(job.hash),
                         "seconds": rec.get("seconds"),
                         "directory": str(self.directories.get(job.hash, self.dir / job.hash))})
        tmp = self.dir / ".plan.json.tmp"
        tmp.write_text(json.dumps({"experiment": self.experiment.name, "jobs": rows}, indent=2))
        os.replace(tmp, self.dir / "plan.json")

    # -- the loop ------------------------------------------------------------------------------------
    def step(self, now: float) -> float | None:
        """Observe, decide, act once; returns when to look again at the latest (None: at the next poll)."""
        observed = self.observe()
        before = self.records
        d = reconcile(self.jobs, self.records, observed, now, self.policy, self.child_name, looks=self.looks,
                      look=self.look if self.design else None)
        self.records = d.records
        if d.looks != self.looks:
            self.looks = d.looks
            self._save_looks()
            self._replan()
            self._adopt_complete()
            for job in self.jobs:  # the next wave's jobs
                self.records.setdefault(job.hash, {"state": "Pending", "attempts": 0})
        for job_hash, rec in self.records.items():
            if rec["state"] == "Succeeded" and before.get(job_hash, {}).get("state") != "Succeeded":
                self.say(f"finished {self.by_hash[job_hash].name} in {now - rec.get('created', now):.0f}s")
        self.results.update(d.results)
        for name in d.delete:
            self.kill(name)
        for job_hash, rec in self.records.items():  # finished attempts are no longer children
            name = self.child_name(job_hash, rec["attempts"])
            if rec["state"] not in ACTIVE and name in self.children:
                self.children.pop(name)
        for kind, reason, message in d.events:
            if kind == "Warning" or reason == "Look":
                self.say(message)
        sharing = len(self.children) + len(d.create)
        for job, attempt in d.create:
            self.launch(job, attempt, sharing)
        self.write_manifest()
        return d.requeue_after

    def run(self, poll_seconds: float = 0.5) -> bool:
        """Run the DAG to the end; True when every job succeeded."""
        self.started = time.time()
        if self.echo and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.live = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("eta {task.fields[eta]}"), transient=True)
            self.live.start()
        try:
            return self._run(poll_seconds)
        finally:
            if self.live:
                with contextlib.suppress(OSError):
                    self.live.stop()
                self.live = None

    def _adopt_complete(self) -> None:
        """Jobs finished by an earlier run, here or under another experiment in the same root, are done.
        They keep what they cost (the answer's cost counts every job, whichever run finished it): the
        earlier run's wall time and cores from its plan.json, else the trainer's own time from COMPLETE."""
        earlier = _earlier_rows(self.dir / "plan.json")
        for job in self.jobs:
            found = None if job.hash in self.records else find_complete(self.root, self.experiment.name, job.hash)
            if found:
                row = earlier.get(job.hash, {})
                self.records[job.hash] = {"state": "Succeeded", "attempts": 0}
                if seconds := row.get("seconds") or _trainer_seconds(found):
                    self.records[job.hash]["seconds"] = seconds
                self.directories[job.hash] = found
                self.cpus.setdefault(job.hash, row.get("cpus") or 1)

    def _run(self, poll_seconds: float) -> bool:
        self._adopt_complete()
        if self.tracking:
            self.tracking = tracking.start_parent(self.tracking, self.experiment.spec, self.experiment.name, self.root)
            self.say(f"MLflow: {self.tracking['uri']}, experiment {self.tracking['experimentName']!r}, parent run "
                     f"{self.tracking.get('parentRunId') or '(made by the first job)'}")
        done = counts(self.records)["Succeeded"]
        design = (f"; seeds in waves until answered (first {self.design.first}, at most {self.design.max_seeds})"
                  if self.design else "")
        if self.notice:
            self.say(self.notice)
        self.say(f"{self.experiment.name}: {len(self.jobs)} jobs, {done} already complete; "
                 f"{self.policy.max_active} at a time{design}")
        try:
            while True:
                wait = self.step(time.time())
                self.show_progress(time.time())
                c = counts(self.records)
                if not any(c[s] for s in ("Pending", "Backoff") + ACTIVE):
                    if self.design and not answer.stopped(self.looks):
                        if self._look_due():  # a wave that ran before (adopted whole): its look is next
                            continue
                        raise RuntimeError("every job ended but the design could not look; see plan.json")
                    break
                time.sleep(poll_seconds if wait is None else min(poll_seconds, max(wait, 0.01)))
        except KeyboardInterrupt:
            grace = self.experiment.spec.scheduling.termination_grace_period_seconds
            self.say(f"interrupted: running jobs finish their step and commit a checkpoint; waiting up to {grace} s "
                     "(spec.scheduling.terminationGracePeriodSeconds) before killing them, Ctrl-C again kills them "
                     "now. Run again to resume")
            self.stop()
            self.write_manifest()
            raise
        ran = sum(1 for r in self.records.values() if r.get("created"))
        self.say(f"{self.experiment.name}: {ran} job(s) ran in {time.time() - self.started:.0f} s wall")
        return all(r["state"] == "Succeeded" for r in self.records.values())


def _signal(pid: int, sig: int) -> None:
    """The child's whole process group (torchrun and its workers); a child that has not yet made its
    group gets the signal itself."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def last_error(log: Path | None) -> str:
    """The line of a trainer log that says what went wrong (the one-line error, or the exception)."""
    if not log or not log.exists():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("stilts_trainer: error:") or "Error" in line.split(":")[0]:
            return line[:300]
    return lines[-1][:300] if lines else ""
