"""The exit-code contract under signals (stilts_contract.names.Exit): a SIGTERM anywhere is a preemption (3), never
bad input (2) nor an unreadable checkpoint; a crash is a failure (1) even when torchrun's SIGTERM makes its survivors
exit 3; a SIGTERM during the last step still commits it.

The real-process tests run the trainer paused at one point (tests/trainer/paused_trainer.py), so that each signal
lands where the test says, every time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stilts_contract.names import Exit, launcher_exit
from stilts_trainer import launch
from stilts_trainer.preemption import Preempted, Watch
from tests.conftest import REPO, holding, job_body, kill_naming, run_trainer, trainer_command

HP = {"maxTrainExamples": 320, "maxSteps": 4, "evalEverySteps": 1000, "evalExamples": 64}


# -- the pieces, without processes ---------------------------------------------------------------------------------

def test_a_sigterm_is_not_an_exception_that_a_catch_all_could_turn_into_another_outcome():
    watch = Watch(install=False)
    with pytest.raises(Preempted):
        try:
            watch._handle(signal.SIGTERM, None)
        except Exception:  # what data.py and engine._resume have: it must not catch a preemption
            pytest.fail("a SIGTERM was caught as an error")


def test_a_swallowed_sigterm_is_raised_again_at_a_safe_point_and_by_the_next_sigterm():
    watch = Watch(install=False)
    try:  # a library's bare `except:` (or a finalizer) loses the first raise
        watch._handle(signal.SIGTERM, None)
    except BaseException:
        pass
    with pytest.raises(Preempted):
        watch.check()
    with pytest.raises(Preempted):  # the next SIGTERM stops it at once too
        watch._handle(signal.SIGTERM, None)


def test_inside_the_loop_a_sigterm_waits_for_the_step_and_after_it_stops_at_once():
    watch = Watch(install=False)
    watch.armed = True
    watch._handle(signal.SIGTERM, None)  # the last step: only the flag
    watch._handle(signal.SIGTERM, None)
    watch.check()  # nothing to do while the step runs
    assert watch.agreed(1)
    watch.armed = False  # the loop is over
    with pytest.raises(Preempted):
        watch.check()
    with pytest.raises(Preempted):
        watch._handle(signal.SIGTERM, None)


class Failure:  # what torchrun's ChildFailedError.failures holds: an exit code and the time it was seen
    def __init__(self, exitcode: int, timestamp: int):
        self.exitcode, self.timestamp = exitcode, timestamp


@pytest.mark.parametrize("failures,expected", [
    ({0: (-9, 100), 1: (3, 101)}, Exit.FAILED),   # a crash, then the survivor SIGTERMed by torchrun exits 3
    ({0: (-9, 100), 1: (3, 100)}, Exit.FAILED),   # in the same second: still the crash
    ({0: (1, 100), 1: (3, 100)}, Exit.FAILED),
    ({0: (3, 100), 1: (3, 100)}, Exit.PREEMPTED),  # both stopped on the flag another pod's SIGTERM set
    ({0: (3, 100), 1: (1, 102)}, Exit.PREEMPTED),  # a rank lost its peer after the preemption
    ({0: (1, 100), 1: (2, 101)}, Exit.BAD_INPUT),  # bad input wins
    ({0: (2, 100)}, Exit.BAD_INPUT),
], ids=["crash-then-3", "crash-and-3-same-second", "error-and-3", "all-3", "3-then-error", "bad-input-wins",
        "bad-input"])
def test_without_a_signal_to_the_launcher_the_earliest_failure_decides(failures, expected):
    assert launch.failed_exit({rank: Failure(*f) for rank, f in failures.items()}) == expected


@pytest.mark.parametrize("signum,before,after,expected", [
    (signal.SIGTERM, {0: None, 1: None}, {0: 3, 1: 3}, Exit.PREEMPTED),
    (signal.SIGTERM, {0: None, 1: None}, {0: 3, 1: 1}, Exit.PREEMPTED),   # a rank lost its peer while stopping
    (signal.SIGTERM, {0: None, 1: None}, {0: 3, 1: None}, Exit.PREEMPTED),  # SIGKILLed past the shutdown timeout
    (signal.SIGTERM, {0: None, 1: None}, {0: 3, 1: 2}, Exit.BAD_INPUT),
    (signal.SIGTERM, {0: None, 1: -9}, {0: 3, 1: -9}, Exit.FAILED),        # a worker had crashed first
    (signal.SIGTERM, {0: 3, 1: -9}, {0: 3, 1: -9}, Exit.FAILED),
    (signal.SIGTERM, {0: None, 1: 2}, {0: 3, 1: 2}, Exit.BAD_INPUT),
    (signal.SIGTERM, {0: 3, 1: None}, {0: 3, 1: 3}, Exit.PREEMPTED),       # stopped on another pod's flag first
    (signal.SIGTERM, {0: 0, 1: 0}, {0: 0, 1: 0}, Exit.OK),                 # it came after the job was done
    (signal.SIGINT, {0: None, 1: None}, {0: 1, 1: 1}, Exit.FAILED),        # nobody commits on SIGINT
    (signal.SIGTERM, None, {}, Exit.PREEMPTED),                            # torchrun's internals unknown
], ids=["sigterm", "sigterm-then-lost-peer", "sigterm-then-sigkill", "sigterm-bad-input", "crash-then-sigterm",
        "crash-and-3-then-sigterm", "bad-input-then-sigterm", "flag-then-sigterm", "done-then-sigterm", "sigint",
        "unknown"])
def test_a_signal_to_the_launcher_is_a_preemption_only_if_no_worker_failed_before_it(signum, before, after, expected):
    assert launch.signalled_exit(signum, before, after) == expected


def test_the_contract_rule_for_pods_keeps_preemption_above_failure_when_the_order_is_not_known():
    assert launcher_exit([1, 3]) == Exit.PREEMPTED and launcher_exit([1, 2, 3]) == Exit.BAD_INPUT
    assert launcher_exit([1, 3], first=[1]) == Exit.FAILED and launcher_exit([3, 3], first=[3]) == Exit.PREEMPTED
    assert launcher_exit([0, 0]) == Exit.OK and launcher_exit([0, -9]) == Exit.FAILED


# -- real trainer processes ----------------------------------------------------------------------------------------

class Paused:
    """A trainer (one process, or `stilts_trainer.launch` with several) paused at `point`."""

    def __init__(self, job: dict, tmp: Path, point: str, nproc: int = 1, launcher_options: tuple = (),
                 name: str = "job.json", env: dict | None = None):
        self.path = tmp / name
        self.path.write_text(json.dumps(job))
        self.dir = tmp / f"pause-{name}"
        self.dir.mkdir()
        self.nproc = nproc
        cmd = trainer_command(self.path, nproc)
        at = len(cmd) - 1 - cmd[::-1].index("stilts_trainer")  # the worker module, after torchrun's options
        cmd[at] = "tests.trainer.paused_trainer"
        cmd[at - 1:at - 1] = list(launcher_options)
        self.log = tmp / f"{name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "STILTS_TEST_PAUSE": point, "STILTS_TEST_PAUSE_DIR": str(self.dir),
               **(env or {})}
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def paused(self, timeout: float = 300) -> dict[int, int]:
        """Wait until every rank waits at the point; their pids by rank."""
        markers = [self.dir / f"paused-rank{rank}" for rank in range(self.nproc)]
        deadline = time.time() + timeout
        while not all(m.exists() and m.read_text() for m in markers):
            assert self.process.poll() is None, self.output()
            assert time.time() < deadline, "never got to the point\n" + self.output()
            time.sleep(0.05)
        return {rank: int(m.read_text()) for rank, m in enumerate(markers)}

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 240) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        """After a failed test: no process of this job is left (torchrun's workers have sessions of their own)."""
        if self.process.poll() is not None:
            return
        kill_naming(self.path)
        self.process.wait(30)


@pytest.fixture
def trainers():
    """Paused trainers, each cleaned up after the test whatever its outcome."""
    made: list[Paused] = []

    def start(*args, **kwargs) -> Paused:
        made.append(Paused(*args, **kwargs))
        return made[-1]

    yield start
    for trainer in made:
        trainer.close()


def dead(pid: int) -> bool:
    """Exited as its parent sees it: gone, or a zombie with no thread left (a killed process's main thread is a
    zombie before its other threads have exited, and its parent cannot reap it until they have)."""
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        return zombie and len(list(Path(f"/proc/{pid}/task").iterdir())) <= 1
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while not dead(pid):
        assert time.time() < deadline
        time.sleep(0.001)
    time.sleep(0.2)  # and the exit reached its parent


def committed(out: Path) -> list[str]:
    return sorted(p.parent.name for p in (out / "checkpoints").glob("step-*/COMMITTED"))


@pytest.mark.slow
def test_sigterm_while_loading_hub_data_is_a_preemption_not_bad_input(tmp_path, trainers):
    """Inside datasets.load_dataset, data.py turns every error into one line: bad input (exit 2, never retried)
    unless the hub is down. A SIGTERM there is neither: exit 3."""
    from stilts_trainer import tasks
    from tests.trainer.test_data import write_hub_layout

    mnli = tasks.get("mnli")
    write_hub_layout(tmp_path / "mirror", "nyu-mll/glue", {"mnli": {
        "train": mnli.synthetic("train", 1, "en")[:50], "validation_matched": mnli.synthetic("dev", 1, "en")[:20]}})
    job = job_body("prefetch", tmp_path / "out", None, dataSource="hub", mirror=str(tmp_path / "mirror"),
                   cacheDir=str(tmp_path / "hf-cache"), prefetch={"models": [], "tasks": ["mnli"]},
                   backbone={"name": "dense", "model": "FacebookAI/xlm-roberta-base"})
    termination = tmp_path / "termination-log"
    termination.touch()
    trainer = trainers(job, tmp_path, "load_dataset", env={"STILTS_TERMINATION_LOG": str(termination)})
    trainer.paused()
    trainer.signal()
    assert trainer.wait() == Exit.PREEMPTED, trainer.output()
    assert "stopped on SIGTERM" in trainer.output()
    assert "could not be loaded" not in trainer.output() and not termination.read_text()
    assert not (tmp_path / "out" / "COMPLETE").exists()


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2], ids=["python-m-stilts_trainer", "launch-2-processes"])
def test_sigterm_while_resuming_keeps_the_checkpoint_and_the_next_attempt_resumes_from_it(tmp_path, pretrained, nproc,
                                                                                           trainers):
    out = tmp_path / "out"
    job = job_body("target", out, pretrained, task="mnli", hyperparameters=HP, checkpointEverySteps=2)
    # Attempt 1 commits step 2 and is stopped while it saves the model after its last step (4, not committed).
    first = trainers(job, tmp_path, "save", nproc, name="attempt1.json")
    first.paused()
    first.signal()
    assert first.wait() == Exit.PREEMPTED, first.output()
    assert committed(out) == ["step-2"]
    # Attempt 2 is stopped while DeepSpeed reads that checkpoint.
    second = trainers(job, tmp_path, "resume", nproc, name="attempt2.json")
    second.paused()
    second.signal()
    assert second.wait() == Exit.PREEMPTED, second.output()
    assert "unreadable" not in second.output() and "refusing to restart" not in second.output()
    assert committed(out) == ["step-2"], "the checkpoint is still the one to resume from"
    # Attempt 3 resumes there and finishes.
    r = run_trainer(job, tmp_path, nproc=nproc, name="attempt3.json")
    assert r.returncode == Exit.OK, r.stderr[-3000:]
    assert "resumed at step 2 of 4" in r.stderr and "unreadable" not in r.stderr
    assert (out / "COMPLETE").exists()


@pytest.mark.slow
def test_sigterm_during_the_last_step_commits_it_and_exits_3(tmp_path, pretrained, trainers):
    """The loop used to leave after its last step without looking at the flag: the work after it (evaluation,
    save) ran on, the SIGTERM lost, until the kubelet's SIGKILL."""
    out = tmp_path / "out"
    job = job_body("target", out, pretrained, task="mnli", hyperparameters=HP, checkpointEverySteps=1000)
    trainer = trainers(job, tmp_path, "last-step")
    trainer.paused()
    trainer.signal()
    assert trainer.wait() == Exit.PREEMPTED, trainer.output()
    assert "preempted: checkpoint of step 4 committed" in trainer.output()
    assert committed(out) == ["step-4"] and not (out / "COMPLETE").exists()
    r = run_trainer(job, tmp_path, name="again.json")
    assert r.returncode == Exit.OK, r.stderr[-3000:]
    assert "resumed at step 4 of 4" in r.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


@pytest.fixture(scope="module")
def target_model(tmp_path_factory, pretrained) -> Path:
    out = tmp_path_factory.mktemp("target") / "out"
    r = run_trainer(job_body("target", out, pretrained, task="mnli", hyperparameters=HP), out.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def survivor_exits_3(output: str) -> bool:
    """The launcher's record shows the survivor's own exit 3 (which the old rule, 3 above 1, reported)."""
    line = next(line for line in output.splitlines() if "stilts_trainer.launch:" in line)
    return "(3," in line or ": 3" in line


@pytest.mark.slow
def test_a_worker_killed_during_evaluation_fails_the_job_even_though_its_peer_exits_3(tmp_path, target_model,
                                                                                      trainers):
    job = job_body("evaluate", tmp_path / "eval", target_model, task="xnli", languages=["en", "de"])
    trainer = trainers(job, tmp_path, "predict", nproc=2)
    pids = trainer.paused()
    kill_and_wait(pids[1])  # rank 0 is still in its forward passes: torchrun's SIGTERM reaches it there
    assert trainer.wait() == Exit.FAILED, trainer.output()
    assert survivor_exits_3(trainer.output()), trainer.output()


@pytest.mark.slow
@pytest.mark.parametrize("then_sigterm", [False, True], ids=["crash", "crash-then-sigterm-to-the-launcher"])
def test_a_worker_killed_during_the_final_save_fails_the_job(tmp_path, pretrained, then_sigterm, trainers):
    """After its last step the phase saves the selected model; a worker SIGKILLed there (OOM, a lost node) is a
    failure. With a SIGTERM to the launcher right after (the pod deleted meanwhile), the crash still decides: there
    torchrun is made to look at its workers only every 300 s (first 300 s after it starts them, longer than this test
    runs), so the SIGTERM surely comes before torchrun notices the crash itself."""
    job = job_body("target", tmp_path / "out", pretrained, task="mnli", hyperparameters=HP)
    options = ("--monitor-interval", "300") if then_sigterm else ()
    trainer = trainers(job, tmp_path, "save", nproc=2, launcher_options=options)
    pids = trainer.paused()
    kill_and_wait(pids[1])
    if then_sigterm:
        trainer.signal()
    assert trainer.wait() == Exit.FAILED, trainer.output()
    assert survivor_exits_3(trainer.output()), trainer.output()
    assert not (tmp_path / "out" / "COMPLETE").exists()


# -- `stilts run`: Ctrl-C gives running jobs the grace a pod gets ---------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_gives_running_local_jobs_the_clusters_grace_to_commit_then_kills_them(tmp_path, capsys):
    """The local executor's Ctrl-C sends SIGTERM and waits spec.scheduling.terminationGracePeriodSeconds (here 10 s,
    the least the spec allows; it used to be a fixed 20 s) before SIGKILL, and says how long it waits."""
    from stilts.local import Child, LocalExecutor
    from stilts.spec import load_experiment

    exp = load_experiment(str(REPO / "examples" / "demo.yaml"))
    exp.spec.scheduling.termination_grace_period_seconds = 10
    executor = LocalExecutor(exp, root=tmp_path)
    children = {"commits": "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), sys.exit(3)))",
                "hangs": "signal.signal(signal.SIGTERM, signal.SIG_IGN)"}
    for name, handler in children.items():
        process = subprocess.Popen([sys.executable, "-c", f"import signal, sys, time; {handler}; print('ready', "
                                    "flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True,
                                   start_new_session=True)
        assert process.stdout.readline() == "ready\n"
        executor.children[name] = Child(executor.jobs[0], 1, process, tmp_path / f"{name}.log", time.time())
    processes = {name: child.process for name, child in executor.children.items()}

    def interrupted(now):
        raise KeyboardInterrupt

    executor.step = interrupted
    started = time.time()
    with pytest.raises(KeyboardInterrupt):
        executor.run()
    took = time.time() - started
    assert processes["commits"].returncode == Exit.PREEMPTED, "it had the time to commit"
    assert processes["hangs"].returncode == -signal.SIGKILL
    assert 9 <= took < 15, took
    assert "waiting up to 10 s (spec.scheduling.terminationGracePeriodSeconds)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("signum, group", [(signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGTERM, True)],
                         ids=["sigterm", "sighup", "sigterm-to-its-group"])
def test_sigterm_or_sighup_stops_stilts_run_as_ctrl_c_does(tmp_path, signum, group):
    """`kill`, `timeout` or a hangup stop `stilts run` as Ctrl-C does: its running trainers commit a checkpoint
    and exit, and none trains on, orphaned, into a directory the next run would start its own trainer in
    (they run in sessions of their own, so a dying executor used to leave them running). `timeout` and a
    hangup signal the whole process group, which kills the forkserver the trainers fork from: here it
    dies first, the worst order, and the executor must neither take its trainer for ended (and start a
    second one in the same directory) nor leave it running."""
    from benchmarks.demo_time import smoke_spec

    spec = smoke_spec(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["spec"]["training"]["pretrain"]["maxSteps"] = 2000  # long enough to be running when the signal comes
    spec.write_text(yaml.safe_dump(doc))
    root = tmp_path / "runs"
    # A terminal's session gets SIGHUP's default; a suite started under nohup would hand down its ignored
    # SIGHUP, which `stilts run` rightly leaves ignored (nohup asked for that).
    cli = subprocess.Popen([sys.executable, "-m", "stilts.cli", "run", str(spec), "--root", str(root)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while not list(root.glob("*/*/progress.json")):  # the pretrain job is training
            assert cli.poll() is None and time.time() < deadline, cli.communicate()[0][-3000:]
            time.sleep(0.2)
        (job,) = [p.parent for p in root.glob("*/*/progress.json")]
        trainers = holding(job) - {cli.pid}
        assert trainers, "the running trainer holds its log"
        if group:
            children = Path(f"/proc/{cli.pid}/task/{cli.pid}/children").read_text().split()
            (server,) = [int(pid) for pid in children if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            kill_and_wait(server)
            time.sleep(2)  # several passes of the executor's loop
            assert holding(job) - {cli.pid} == trainers, "the same trainer, and no second one"
        cli.send_signal(signum)
        out, _ = cli.communicate(timeout=60)
        assert cli.returncode == 128 + signum, out[-3000:]
        assert "interrupted" in out, out[-3000:]
        assert not holding(root), "no trainer left behind"
    finally:  # what a failure left behind must not train on (or start more jobs) into the rest of the suite
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        for pid in holding(root):
            os.kill(pid, signal.SIGKILL)
    assert "SIGTERM: finishing this step, then committing a checkpoint" in (job / "train.log").read_text()
    assert committed(job), "it committed before it stopped"
