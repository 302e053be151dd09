"""`python -m stilts_trainer --job job.json` runs one phase; `python -m stilts_trainer tasks` lists tasks.

Exit codes (stilts_contract.names.Exit): 0 when COMPLETE is written, 2 for bad input only (JobError,
DataError or an unsafe checkpoint: one line naming the field; executors never retry it), 3 when SIGTERM
stopped it (preemption.py: a checkpoint is committed where a step could finish; executors retry it
without counting it against the retry limit), 1 for anything else, which executors retry.
Several processes run under `python -m stilts_trainer.launch` (torchrun that keeps these codes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from stilts_contract.names import Exit


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    import datasets

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def list_tasks(markdown: bool = False) -> int:
    """The task registry as a table (--markdown: the one docs/tasks.md carries, kept equal by a test)."""
    from . import tasks

    rows = [("name", "format", "source", "metric")]
    for name in tasks.names():
        t = tasks.get(name)
        rows.append((name, t.format, t.source, t.metric))
    if markdown:
        print("| task | format | source | metric |\n|---|---|---|---|")
        for name, fmt, source, metric in rows[1:]:
            print(f"| `{name}` | {fmt} | {source} | {metric} |")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stilts_trainer", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["run", "tasks"], default="run")
    parser.add_argument("--job", help="path of the job.json to run")
    parser.add_argument("--markdown", action="store_true", help="tasks: print the table as Markdown")
    args = parser.parse_args(argv)
    if args.command == "tasks":
        return list_tasks(args.markdown)
    if not args.job:
        parser.error("--job is required (the path of a job.json)")
    from .preemption import Preempted, Watch, installed

    if installed() is None and threading.current_thread() is threading.main_thread():
        Watch()  # first thing: a SIGTERM while importing or loading data exits 3 too, never as killed by it
    try:
        return _run(args)
    except Preempted as err:  # a BaseException: nothing on the way turns it into another exit code
        logging.getLogger("stilts_trainer").warning("%s", err)
        return Exit.PREEMPTED


def _run(args) -> int:
    fmt = "%(asctime)s rank" + os.environ.get("RANK", "0") + " %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)
    keep_log(fmt)
    from .job import JobError, load

    try:
        job = load(args.job)
    except JobError as err:
        return bad_input(err)
    _quiet_libraries()
    from .data import DataError, HubUnavailable
    from .phases import run
    from .safe_load import UnsafeCheckpoint

    try:
        summary = run(job)
    except HubUnavailable as err:  # one line, and worth retrying
        print(f"stilts_trainer: error: {err}", file=sys.stderr)
        return Exit.FAILED
    except (JobError, DataError, UnsafeCheckpoint) as err:  # bad input: retrying cannot fix these
        return bad_input(err)
    # Anything else (a library's ValueError included) propagates: exit 1, retried.
    logging.getLogger("stilts_trainer").info("done: %s", summary)
    return Exit.OK


def keep_log(fmt: str) -> None:
    """On a cluster, rank 0 also appends its log to the job's directory on the shared volume
    (STILTS_LOG_FILE), so `stilts logs` can read a failed attempt's log after its pod is gone."""
    path = os.environ.get("STILTS_LOG_FILE")
    if not path or os.environ.get("RANK", "0") != "0":
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError as err:  # a read-only or missing volume must not stop training; the pod log remains
        logging.getLogger("stilts_trainer").warning("cannot keep the log in %s: %s", path, err)
        return
    handler.setFormatter(logging.Formatter(fmt))
    logging.getLogger().addHandler(handler)
    attempt = os.environ.get("STILTS_ATTEMPT", "?")
    logging.getLogger("stilts_trainer").info("=== attempt %s, pod %s", attempt, os.environ.get("HOSTNAME", "?"))


def bad_input(err: Exception) -> int:
    """One line naming the field, on stderr and, in a pod, as the termination message the operator
    shows in the experiment's status."""
    line = f"stilts_trainer: error: {err}"
    print(line, file=sys.stderr)
    from .checkpoint import write_termination_message

    if int(os.environ.get("RANK", "0")) == 0:
        write_termination_message(line)
    return Exit.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
