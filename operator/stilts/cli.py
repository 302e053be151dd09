"""`stilts`: plan, render, run and report a TransferExperiment; print the CRD."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .spec import SpecError, load_experiment


def cmd_plan(args) -> int:
    from .plan import plan

    exp = load_experiment(args.file)
    jobs = plan(exp.spec)
    rows = [("hash", "job", "phase", "after", "world")]
    for j in jobs:
        rows.append((j.hash[:10], j.name, j.phase, ",".join(d[:10] for d in j.depends_on) or "-",
                     f"{j.workers}x{j.processes_per_worker}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    phases = {}
    for j in jobs:
        phases[j.phase] = phases.get(j.phase, 0) + 1
    print(f"\n{len(jobs)} jobs: " + ", ".join(f"{n} {p}" for p, n in phases.items()))
    return 0


def cmd_render(args) -> int:
    """The Kubernetes objects the operator creates for this file: the claim (unless one is named) and,
    per job, its ConfigMap (job.json) and child (PyTorchJob or TrainJob), first attempt. The owner's uid
    is a placeholder."""
    import yaml

    from . import backends, manifests
    from .plan import plan
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
        template = manifests.pod_template(experiment, job, 1, name, backend.container)
        docs += [manifests.config_map(experiment, job, 1, name),
                 backend.manifest(experiment, job, 1, name, template, manifests.metadata(experiment, name, job, 1))]
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def cmd_operator(args) -> int:
    from .operator import run

    run(args.namespace, standalone=not args.peering, peering=args.peering)
    return 0


def cmd_run(args) -> int:
    from .local import LocalExecutor
    from .report import write

    exp = load_experiment(args.file)
    executor = LocalExecutor(exp, root=Path(args.root), nproc=args.nproc, parallel=args.parallel,
                             checkpoint_every_steps=args.checkpoint_every)
    try:
        ok = executor.run()
    except KeyboardInterrupt:
        return 130
    run_dir = executor.dir
    if any(j.phase == "evaluate" and executor.records.get(j.hash, {}).get("state") == "Succeeded"
           for j in executor.jobs):
        print()
        print(write(run_dir))
        print(f"report: {run_dir / 'report.txt'}, {run_dir / 'report.json'}, {run_dir / 'heatmap.png'}")
    if not ok:
        failed = [r for r in executor.records.values() if r["state"] in ("Failed", "Blocked")]
        print(f"{len(failed)} job(s) did not finish; see their train.log. Run the same command to retry.",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from .report import write

    run_dir = Path(args.dir)
    if not (run_dir / "plan.json").is_file():
        print(f"stilts: error: {run_dir} has no plan.json (give runs/<experiment>)", file=sys.stderr)
        return 2
    print(write(run_dir, args.split))
    return 0


def cmd_crd(args) -> int:
    from .crd import render

    sys.stdout.write(render())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stilts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="the experiment's jobs as a table")
    p.add_argument("file")
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
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="results table, gains, interaction and heatmap of a run directory")
    p.add_argument("dir")
    p.add_argument("--split", choices=["test", "dev"], default="test")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("crd", help="print the TransferExperiment CRD")
    p.set_defaults(func=cmd_crd)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as err:
        print(f"stilts: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
