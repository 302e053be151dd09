"""Commit markers. A directory counts only once its marker exists, written last and atomically
(temp file, fsync, rename, fsync of the directory) the way torch.distributed.checkpoint commits.
DeepSpeed's own `latest` file is not a commit: rank 0 writes it before other ranks finish."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from stilts_contract.names import COMPLETE

COMMITTED = "COMMITTED"


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def fsync_tree(directory: str | Path) -> None:
    """Flush every file under `directory`, then the directories, so that a marker written after this
    never commits files that are still only in the page cache (a node crash would lose them)."""
    for root, _, files in os.walk(directory):
        for name in files:
            fsync_path(os.path.join(root, name))
    for root, _, _ in os.walk(directory, topdown=False):
        fsync_path(root)


def fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # another rank's temporary file, renamed meanwhile: that rank flushes it
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def is_complete(directory: str | Path) -> bool:
    return (Path(directory) / COMPLETE).is_file()


def mark_complete(directory: str | Path, summary: dict) -> None:
    write_json_atomic(Path(directory) / COMPLETE, summary)


def committed_checkpoints(root: str | Path) -> list[Path]:
    """Committed step checkpoints under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / COMMITTED).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def replace_dir(src: Path, dst: Path) -> None:
    """Swap a fully written directory into place; a crash leaves either the old or the new one."""
    old = dst.with_name(dst.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)


def write_termination_message(text: str) -> None:
    """In a pod, what the operator reads of a finished container (Kubernetes keeps 4096 bytes):
    the job's summary on success, the one-line reason on bad input."""
    path = Path(os.environ.get("STILTS_TERMINATION_LOG", "/dev/termination-log"))
    if path.exists():
        path.write_text(text[:4096])
