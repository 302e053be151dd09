"""`stilts`: plan, render, run and report a TransferExperiment; print the CRD."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from stilts_contract.names import TRAIN_LOG

from .spec import SpecError, load_experiment


def cmd_plan(args) -> int:
    from . import answer
    from .plan import arms, plan, run_tasks
    from .report import plan_power

    exp = load_experiment(args.file)
    jobs = plan(exp.spec)
    rows = [("hash", "job", "phase", "after", "world")]
    for j in jobs:
        rows.append((j.hash[:10], j.name, j.phase, ",".join(d[:10] for d in j.depends_on) or "-",
                     f"{j.launch.workers}x{j.launch.processes}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    phases = {}
    for j in jobs:
        phases[j.phase] = phases.get(j.phase, 0) + 1
    print(f"\n{len(jobs)} jobs: " + ", ".join(f"{n} {p}" for p, n in phases.items()))
    print(f"Runs of each backbone ({', '.join(b.name for b, _ in arms(exp.spec))}), per seed: "
          + ", ".join(run_tasks(exp.spec)))
    if exp.spec.mlm_mix:
        print(f"Ablation: each <task>-mlm run mixes multilingual masked-LM into its intermediate phase "
              f"({exp.spec.mlm_mix.weight:.0%} of micro-batches, {len(exp.spec.mlm_mix.languages)} languages)")
    design = answer.Design.of(exp.spec)
    if design:
        print(_design_plan(design, jobs, args.seed_sd, args.job_hours))
    elif any(b.architecture == "moe" for b in exp.spec.backbones) and exp.spec.baseline:
        print("Power: " + plan_power(len(answer.seeds(exp.spec)), args.seed_sd))
    return 0


def _design_plan(design, jobs, seed_sd: float, job_hours: float | None) -> str:
    """What a sequential design may cost before any run: its looks, and the seeds, jobs and GPU-hours it
    is expected to use (a per-seed SD of the dense-vs-MoE difference assumed; the looks use the measured
    one) with no difference and with one twice the target, and at most."""
    from .answer import expected_seeds

    first = [j for j in jobs if j.seed == 1]
    shared = [j for j in jobs if j.seed is None]
    comparisons = len({(j.backbone, j.intermediate_task) for j in first if j.phase == "evaluate"
                       and j.job.backbone.architecture == "moe" and j.intermediate_task != "none"})
    gpus = lambda js: sum(j.launch.gpus * j.launch.workers for j in js)  # noqa: E731
    lines = [f"Sequential design: looks after {', '.join(map(str, design.sizes(design.most_looks)))} seeds; a "
             f"comparison is answered once decided or within +/-{design.target * 100:g} points; the jobs above are the "
             f"first wave, each look that leaves a comparison open adds {design.per_look} seed(s) "
             f"(a seed is {len(first)} jobs, on {gpus(first)} GPUs in all)."]
    for label, effect in (("if MoE and dense gain the same", 0.0),
                          (f"if they differ by {2 * design.target * 100:g} points", 2 * design.target)):
        found = expected_seeds(design, seed_sd / 100, effect, comparisons=max(1, comparisons))
        n = found["mean"]
        hours = f", about {(gpus(shared) + n * gpus(first)) * job_hours:.0f} GPU-hours" if job_hours else ""
        lines.append(f"  expected {n:.1f} seeds, {len(shared) + n * len(first):.0f} jobs{hours} {label} "
                     f"(assuming a per-seed SD of {seed_sd:g} points for that difference, --seed-sd)")
    most = design.max_seeds
    hours = f", {(gpus(shared) + most * gpus(first)) * job_hours:.0f} GPU-hours" if job_hours else \
        " (--job-hours H prints GPU-hours)"
    lines.append(f"  at most {most} seeds, {len(shared) + most * len(first)} jobs{hours}")
    return "\n".join(lines)


def cmd_render(args) -> int:
    """The Kubernetes objects the operator creates for this file: the claim (unless one is named) and,
    per job, its ConfigMap (job.json) and child (PyTorchJob or TrainJob), first attempt. The owner's uid
    is a placeholder."""
    import yaml

    from . import backends, manifests
    from .plan import plan
    from .policy import DEFAULT_TRAINER_IMAGE
    from .spec import API_VERSION, KIND, dump_spec

    backend = backends.get(args.backend)
    exp = load_experiment(args.file)
    experiment = {"apiVersion": API_VERSION, "kind": KIND,
                  "metadata": {"name": exp.name, "namespace": args.namespace or exp.namespace,
                               "uid": "00000000-0000-0000-0000-000000000000"},
                  "spec": dump_spec(exp.spec)}
    stem = manifests.prefix(experiment, backend.max_name)
    docs = [] if experiment["spec"]["storage"].get("claimName") else [manifests.claim(experiment)]
    for job in plan(exp.spec):
        name = manifests.child_name(stem, job.hash, 1)
        template = manifests.pod_template(experiment, exp.spec, job, 1, name, backend.container,
                                          os.environ.get("STILTS_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE))
        docs += [manifests.config_map(experiment, job, 1, name),
                 backend.manifest(experiment, job, 1, name, template, manifests.metadata(experiment, name, job, 1))]
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def cmd_operator(args) -> int:
    from .operator import run

    run(args.namespace, standalone=not args.peering, peering=args.peering)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP to `stilts run` (`timeout`, `kill`, a closed terminal, a process manager), handled as
    Ctrl-C is: the jobs run in sessions of their own, so without this they would train on, orphaned, into
    the directories that the next `stilts run` of the same root starts its own trainers in."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _terminated(signum, frame):
    # Once: `timeout` signals the process and then its group, and a second signal would cut the jobs'
    # grace short (a second Ctrl-C still does that, on purpose).
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


def cmd_run(args) -> int:
    from .local import LocalExecutor
    from .report import from_directory, outputs, write

    exp = load_experiment(args.file)
    executor = LocalExecutor(exp, root=Path(args.root), nproc=args.nproc, parallel=args.parallel,
                             checkpoint_every_steps=args.checkpoint_every, mlflow=args.mlflow)
    # `nohup stilts run` keeps ignoring the hangup.
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        for signum, handler in before.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, _terminated)
        ok = executor.run()
    except Terminated as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 130
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    run_dir = executor.dir
    if any(j.phase == "evaluate" and executor.records.get(j.hash, {}).get("state") == "Succeeded"
           for j in executor.jobs):
        print()
        print(write(from_directory(run_dir), run_dir))
        print("report: " + ", ".join(str(p) for p in outputs(run_dir)))
    if executor.tracking:  # the report and the grid's end, in the experiment's MLflow parent run
        from .tracking import log_report
        print(log_report(executor.tracking, run_dir, finished=ok))
    if not ok:
        failed = [r for r in executor.records.values() if r["state"] in ("Failed", "Blocked")]
        print(f"{len(failed)} job(s) did not finish; see their train.log. Run the same command to retry.",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    """The report of a local run directory, a copy of an experiment's volume directory, or tx/NAME."""
    from . import report

    name = _cluster_name(args.target)
    seen = None
    if name:
        cluster, api, namespace = _cluster(args)
        seen = cluster.load(api, namespace, name, args.backend)
        inputs = report.from_cluster(seen)
        out = Path(args.out or f"report-{name}")
    else:
        directory = Path(args.target)
        if not directory.is_dir():
            print(f"stilts: error: {directory} is neither tx/NAME nor a directory", file=sys.stderr)
            return 2
        planned = design = None
        if args.spec:  # a volume copy: the spec names what is missing, and a sequential design's looks replay
            from .answer import Design
            from .plan import plan
            spec = load_experiment(args.spec).spec
            planned, design = plan(spec), Design.of(spec)
        inputs = report.from_directory(directory, planned, design)
        if not inputs.runs and not inputs.missing:
            print(f"stilts: error: {directory} holds no evaluate jobs (give runs/<experiment>, or a copy of "
                  "/workspace/<experiment> from the volume)", file=sys.stderr)
            return 2
        out = Path(args.out) if args.out else directory
    print(report.write(inputs, out, args.split))
    print("report: " + ", ".join(str(p) for p in report.outputs(out)))
    experiment = getattr(seen, "experiment", None)
    from .manifests import tracking as tracking_settings
    if experiment and (settings := tracking_settings(experiment)):
        # The experiment's parent run (its jobs made it) gets the report, with this user's credentials.
        from .tracking import log_report
        print(log_report(settings, out, finished=(experiment.get("status") or {}).get("phase") == "Succeeded"))
    return 0


def _cluster_name(target: str) -> str | None:
    """`tx/NAME` (or transferexperiment/NAME) names an experiment on the cluster; anything else is a path."""
    kind, _, name = target.partition("/")
    return name if kind in ("tx", "transferexperiment", "transferexperiments") and name else None


def _cluster(args):
    from . import cluster

    api = cluster.api_client(args.kubeconfig, args.context)
    namespace = args.namespace or cluster.current_namespace(args.kubeconfig)
    return cluster, api, namespace


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_status(args) -> int:
    """Every job of an experiment with its state: on the cluster (tx/NAME) or of a local run directory."""
    import json

    name = _cluster_name(args.target)
    if name:
        cluster, api, namespace = _cluster(args)
        seen = cluster.load(api, namespace, name)
        status = seen.experiment.get("status") or {}
        print(f"{namespace}/{name}: {status.get('phase', 'Pending')}, {status.get('progress', '')} done; "
              f"{status.get('message', '')}")
        jobs = [(j.name, j.phase, seen.records.get(j.hash, {})) for j in seen.jobs]
    else:
        manifest = Path(args.target) / "plan.json"
        if not manifest.is_file():
            print(f"stilts: error: {args.target} is neither tx/NAME nor a run directory with plan.json", file=sys.stderr)
            return 2
        rows = json.loads(manifest.read_text())["jobs"]
        jobs = [(r["name"], r["phase"], {"state": r["status"], "attempts": r["attempts"], "message": r["message"]})
                for r in rows]
    shown = [(n, p, r) for n, p, r in jobs if args.all or r.get("state", "Pending") != "Succeeded"]
    table = [("job", "phase", "state", "attempts", "reason", "message")] + [
        (n, p, r.get("state", "Pending"), r.get("attempts", 0), r.get("reason", ""), r.get("message", "")[:100])
        for n, p, r in shown]
    print(_table(table) if shown else "every job succeeded")
    if not args.all and len(shown) < len(jobs):
        print(f"({len(jobs) - len(shown)} succeeded jobs not shown; --all shows them)")
    return 0


def cmd_retry(args) -> int:
    """Re-arm failed jobs (and those they blocked) of a cluster experiment; finished jobs are kept."""
    name = _cluster_name(args.target)
    if not name:
        print("stilts: error: retry takes tx/NAME (a local run retries by running `stilts run` again)",
              file=sys.stderr)
        return 2
    cluster, api, namespace = _cluster(args)
    seen = cluster.load(api, namespace, name)
    failed = [j.name for j in seen.jobs if seen.records.get(j.hash, {}).get("state") in ("Failed", "Blocked")]
    token = cluster.retry(api, namespace, name)
    print(f"{namespace}/{name}: re-arming {len(failed)} failed or blocked job(s) (retry {token})"
          + ("" if failed else "; none failed now, so nothing will change"))
    return 0


def cmd_logs(args) -> int:
    """A job's log: its live leader pod, or every attempt's log kept on the volume once the pods are gone."""
    name = _cluster_name(args.target)
    if not name:
        root = Path(args.target)
        plan_file = root / "plan.json"  # a local run names its jobs there; a volume copy has hashes only
        names = {j["name"]: j["hash"] for j in json.loads(plan_file.read_text())["jobs"]} if plan_file.is_file() else {}
        matches = sorted(root.glob(f"{names.get(args.job, args.job)}*/{TRAIN_LOG}"))
        if len(matches) != 1:
            print(f"stilts: error: {'no' if not matches else 'more than one'} {TRAIN_LOG} for {args.job} under "
                  f"{args.target} (give a job's name from `stilts status {args.target} --all`, or its hash)",
                  file=sys.stderr)
            return 2
        log = matches[0]
        sys.stdout.write(log.read_text(errors="replace"))
        return 0
    cluster, api, namespace = _cluster(args)
    seen = cluster.load(api, namespace, name)
    try:
        job = cluster.find_job(seen, args.job)
    except LookupError as err:
        print(f"stilts: error: {err}", file=sys.stderr)
        return 2
    for chunk in cluster.job_log(api, seen, job, follow=args.follow, backend=args.backend):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return 0


def cmd_tensorboard(args) -> int:
    """Every training job's curves in TensorBoard: of a local run directory, or of tx/NAME (a pod on the
    cluster reading the volume, and a port forwarded to it once the pod runs). Ctrl-C stops it quietly."""
    import shutil
    import subprocess

    from . import tensorboard

    name = _cluster_name(args.target)
    try:
        if not name:
            if args.stop:
                print("stilts: error: --stop is for tx/NAME (a local TensorBoard stops with Ctrl-C)", file=sys.stderr)
                return 2
            manifest = Path(args.target) / "plan.json"
            if not manifest.is_file():
                print(f"stilts: error: {args.target} is neither tx/NAME nor a run directory with plan.json",
                      file=sys.stderr)
                return 2
            jobs = [(r["name"], r["phase"], r["directory"]) for r in json.loads(manifest.read_text())["jobs"]]
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                print("stilts: error: TensorBoard is not installed here (`make install` installs it, or pip install "
                      "tensorboard)", file=sys.stderr)
                return 2
            cmd = tensorboard.command(tensorboard.logdir_spec(jobs), args.port, "127.0.0.1")
            print(f"TensorBoard on http://127.0.0.1:{args.port}/ (Ctrl-C stops it)", flush=True)
            return subprocess.call([sys.executable, "-m", "tensorboard.main", *cmd[1:]])
        from .policy import DEFAULT_TRAINER_IMAGE

        cluster, api, namespace = _cluster(args)
        seen = cluster.load(api, namespace, name, args.backend)
        try:
            if args.stop:
                pod = tensorboard.delete_pod(api, seen)
                print(f"{namespace}/{pod} deleted" if pod else f"{name} has no TensorBoard pod in {namespace}")
                return 0
            pod = tensorboard.ensure_pod(api, seen, seen.spec.image or DEFAULT_TRAINER_IMAGE)
        except tensorboard.NotOwned as err:
            print(f"stilts: error: {err}", file=sys.stderr)
            return 1
        forward = ["kubectl", "port-forward", "-n", namespace, f"pod/{pod}", f"{args.port}:{tensorboard.PORT}"]
        if args.kubeconfig:
            forward += ["--kubeconfig", args.kubeconfig]
        if args.context:
            forward += ["--context", args.context]
        print(f"{namespace}/{pod} serves the curves of {name} (it goes when the experiment is deleted, or with "
              f"`stilts tensorboard {args.target} --stop`)")
        if args.no_forward or not shutil.which("kubectl"):
            print("then: " + " ".join(forward))
            return 0
        try:
            tensorboard.wait_running(api, namespace, pod, args.wait, say=lambda line: print(line, flush=True))
        except (TimeoutError, RuntimeError) as err:
            print(f"stilts: error: {err}", file=sys.stderr)
            return 1
        print(f"TensorBoard on http://127.0.0.1:{args.port}/ (Ctrl-C stops forwarding)", flush=True)
        return subprocess.call(forward)
    except KeyboardInterrupt:
        print("\nstopped" + (f"; the pod keeps serving, `stilts tensorboard {args.target} --stop` deletes it"
                             if name else ""), file=sys.stderr)
        return 130


def cmd_crd(args) -> int:
    from .crd import render

    sys.stdout.write(render())
    return 0


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="stilts", description=__doc__)
    sub = out.add_subparsers(dest="command", required=True)
    _file_commands(sub)
    _target_commands(sub)
    p = sub.add_parser("crd", help="print the TransferExperiment CRD")
    p.set_defaults(func=cmd_crd)
    return out


def _file_commands(sub) -> None:
    """The commands that take an experiment's file, and the operator."""
    p = sub.add_parser("plan", help="the experiment's jobs as a table")
    p.add_argument("file")
    p.add_argument("--seed-sd", type=float, default=1.0, help="assumed seed-to-seed SD (points) of the dense-vs-"
                   "MoE gain difference, for the power line and a sequential design's expected cost (default 1.0)")
    p.add_argument("--job-hours", type=float, default=None, help="hours one job takes on its GPUs: with a "
                   "sequential design, prints its expected and most GPU-hours")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("render", help="the Kubernetes objects the operator would create")
    p.add_argument("file")
    p.add_argument("--namespace", default="", help="namespace of the experiment (default: the file's)")
    p.add_argument("--backend", default="pytorchjob", help="job backend: pytorchjob (default) or trainjob")
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("operator", help="run the Kubernetes operator (the operator image's entry point)")
    p.add_argument("--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable); default: all namespaces")
    p.add_argument("--peering", default=None, help="kopf peering name, to run several replicas with one "
                   "active (needs kopf's peering CRDs); default: standalone, one replica")
    p.set_defaults(func=cmd_operator)
    p = sub.add_parser("run", help="run the experiment on this machine, then report")
    p.add_argument("file")
    p.add_argument("--root", default="runs", help="checkpoint root (default: ./runs)")
    p.add_argument("--nproc", type=int, default=None, help="trainer processes for every training job (default: "
                   "each job's planned world size, workers x gpusPerWorker); refused when a rule the trainer "
                   "applies would fail with it")
    p.add_argument("--parallel", type=int, default=0, help="jobs at once (default: cores / the widest job, "
                   "at most spec.maxConcurrentJobs)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="optimizer steps between checkpoints")
    p.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI", help="track the run in MLflow "
                   "(docs/tracking.md): at URI, or without one in a sqlite store under the root (ROOT/mlflow.db); "
                   "default: spec.tracking.mlflow, else off")
    p.set_defaults(func=cmd_run)


TARGET_COMMANDS = (("report", cmd_report, "tables, intervals, the interaction, a heatmap and a plot of the "
                     "answer, from the results so far"),
                   ("status", cmd_status, "every job of an experiment and its state"),
                   ("retry", cmd_retry, "re-arm the failed jobs of a cluster experiment"),
                   ("logs", cmd_logs, "a job's log (live, or from the volume once its pods are gone)"),
                   ("tensorboard", cmd_tensorboard, "every training job's curves in TensorBoard"))


def _target_commands(sub) -> None:
    """The commands that take tx/NAME or a local run directory."""
    for command, func, text in TARGET_COMMANDS:
        p = sub.add_parser(command, help=text)
        p.add_argument("target", help="tx/NAME on the cluster (current kubeconfig), or a local run directory")
        {"logs": _logs_options, "status": _status_options, "tensorboard": _tensorboard_options,
         "report": _report_options}.get(command, lambda p: None)(p)
        p.add_argument("-n", "--namespace", default="", help="namespace (default: the kubeconfig context's)")
        p.add_argument("--kubeconfig", default=None)
        p.add_argument("--context", default=None)
        p.add_argument("--backend", default=os.environ.get("STILTS_JOB_BACKEND", "pytorchjob"),
                       help="the operator's job backend (pytorchjob or trainjob)")
        p.set_defaults(func=func)


def _logs_options(p) -> None:
    p.add_argument("job", help="the job's name (dense-qqp-s1-target, see `stilts status`) or hash prefix")
    p.add_argument("-f", "--follow", action="store_true", help="follow the live log")


def _status_options(p) -> None:
    p.add_argument("--all", action="store_true", help="list succeeded jobs too")


def _tensorboard_options(p) -> None:
    p.add_argument("--port", type=int, default=6006, help="local port (default 6006)")
    p.add_argument("--no-forward", action="store_true", help="tx/NAME: start the pod, print the "
                   "kubectl port-forward command instead of running it")
    p.add_argument("--wait", type=float, default=600, metavar="SECONDS", help="tx/NAME: how long to wait "
                   "for the pod to run before forwarding (the first start pulls the trainer image; default 600)")
    p.add_argument("--stop", action="store_true", help="tx/NAME: delete the experiment's TensorBoard pod")


def _report_options(p) -> None:
    p.add_argument("--split", choices=["test", "dev"], default="test")
    p.add_argument("--out", default="", help="where report.txt/json, heatmap.png and answer.png go (default: the "
                   "directory itself, or ./report-NAME for tx/NAME)")
    p.add_argument("--spec", default="", help="the experiment's file: with a volume copy, names the evaluate "
                   "jobs that have not finished, and replays a sequential design's looks")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as err:
        print(f"stilts: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
