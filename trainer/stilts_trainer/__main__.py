"""`python -m stilts_trainer --job job.json` runs one phase; `python -m stilts_trainer tasks` lists tasks.

Exit codes: 0 when COMPLETE is written, 2 for bad input (one line naming the field), 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


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


def list_tasks() -> int:
    from . import tasks

    rows = [("name", "format", "source", "metric")]
    for name in tasks.names():
        t = tasks.get(name)
        rows.append((name, t.format, t.source, t.metric))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stilts_trainer", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["run", "tasks"], default="run")
    parser.add_argument("--job", help="path of the job.json to run")
    args = parser.parse_args(argv)
    if args.command == "tasks":
        return list_tasks()
    if not args.job:
        parser.error("--job is required (the path of a job.json)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank" + os.environ.get("RANK", "0")
                        + " %(levelname)s %(message)s")
    from .job import JobError, load

    try:
        job = load(args.job)
    except JobError as err:
        print(f"stilts_trainer: error: {err}", file=sys.stderr)
        return 2
    _quiet_libraries()
    from .data import DataError
    from .phases import run

    try:
        summary = run(job)
    except (DataError, ValueError) as err:
        print(f"stilts_trainer: error: {err}", file=sys.stderr)
        return 2
    logging.getLogger("stilts_trainer").info("done: %s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
