"""Tokenize once per experiment: encoded training sets on the shared volume, memory-mapped by ranks.

Without it every rank of every job loads a task's whole training set as Python objects and tokenizes
it (400k MNLI pairs on each of 16 ranks, in every job that trains on MNLI). With it the first job
that needs a training set encodes it on one rank and writes it under `<cacheDir>/stilts-features/`,
named by a fingerprint of everything that determines the features (task, data source and seed,
dataset revision, example cap, tokenizer files, lengths, task settings, labels, the format's code
version). Every later rank and job maps it read-only: a rank touches only the pages of its own
micro-batches, so its memory does not grow with the dataset, and the sampler, which works on
indices, resumes exactly as before.

Layout: one directory per fingerprint, written to a temporary name and renamed into place (a
concurrent writer of the same fingerprint loses the rename and uses the winner's), holding
meta.json and, per feature field, int arrays in .npy: a scalar column, or values plus offsets for a
ragged one (token ids), or values plus two offset levels (multiple choice: choices x tokens).
Fields that are not integers (span offsets into the text) are for evaluation only and are not kept.

STILTS_FEATURE_CACHE=off turns it off (every rank encodes in memory, as before).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np

VERSION = 1  # of the layout and of the encoders' output; bump when either changes
DIRECTORY = "stilts-features"


def enabled(cache_dir: str) -> bool:
    return bool(cache_dir) and os.environ.get("STILTS_FEATURE_CACHE", "on").lower() not in ("off", "0", "false")


def fingerprint(key: dict) -> str:
    return hashlib.sha256(json.dumps({**key, "version": VERSION}, sort_keys=True, default=str).encode()).hexdigest()[:24]


def tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer's identity: its vocabulary and rules, wherever it was loaded from."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _kind(value) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return "scalar"
    if isinstance(value, list) and all(isinstance(v, (int, np.integer)) for v in value):
        return "ragged"
    if isinstance(value, list) and all(isinstance(v, list) and all(isinstance(x, (int, np.integer)) for x in v)
                                       for v in value):
        return "nested"
    return None


def write(directory: Path, features: list[dict], meta: dict) -> None:
    """Write features (and meta) as the cache entry `directory`, atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    kinds = {k: _kind(v) for k, v in features[0].items()} if features else {}
    columns = {}
    for key, kind in kinds.items():
        if kind is None or any(_kind(f[key]) != kind for f in features):
            continue
        values = [f[key] for f in features]
        if kind == "scalar":
            np.save(tmp / f"{key}.npy", np.asarray(values, dtype=np.int64))
        elif kind == "ragged":
            np.save(tmp / f"{key}.values.npy", np.fromiter((x for v in values for x in v), dtype=np.int32))
            np.save(tmp / f"{key}.offsets.npy", np.cumsum([0] + [len(v) for v in values], dtype=np.int64))
        else:
            rows = [row for v in values for row in v]
            np.save(tmp / f"{key}.values.npy", np.fromiter((x for r in rows for x in r), dtype=np.int32))
            np.save(tmp / f"{key}.offsets.npy", np.cumsum([0] + [len(r) for r in rows], dtype=np.int64))
            np.save(tmp / f"{key}.groups.npy", np.cumsum([0] + [len(v) for v in values], dtype=np.int64))
        columns[key] = kind
    (tmp / "meta.json").write_text(json.dumps({**meta, "count": len(features), "columns": columns}))
    for path in tmp.iterdir():  # the volume may be shared by other nodes: data reaches the disk first
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    try:
        os.rename(tmp, directory)
    except OSError:  # another job wrote it first: theirs is the same
        shutil.rmtree(tmp, ignore_errors=True)


class Features(Sequence):
    """A cache entry, memory-mapped: item i is the feature dict (lists of ints) the encoder made."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text())
        self._columns = {}
        for key, kind in self.meta["columns"].items():
            load = lambda name: np.load(directory / f"{key}.{name}.npy", mmap_mode="r")  # noqa: E731
            if kind == "scalar":
                self._columns[key] = (kind, np.load(directory / f"{key}.npy", mmap_mode="r"))
            elif kind == "ragged":
                self._columns[key] = (kind, load("values"), load("offsets"))
            else:
                self._columns[key] = (kind, load("values"), load("offsets"), load("groups"))

    def __len__(self) -> int:
        return self.meta["count"]

    def padded_lengths(self, key: str) -> np.ndarray:
        """Each item's length once collated (its longest row for nested columns), from the offsets alone."""
        kind, _, offsets, *groups = self._columns[key]
        rows = np.diff(offsets)
        if kind == "ragged":
            return rows
        return np.maximum.reduceat(rows, groups[0][:-1]) if len(rows) else rows

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        out = {}
        for key, (kind, *arrays) in self._columns.items():
            if kind == "scalar":
                out[key] = int(arrays[0][i])
            elif kind == "ragged":
                values, offsets = arrays
                out[key] = values[offsets[i]:offsets[i + 1]].tolist()
            else:
                values, offsets, groups = arrays
                out[key] = [values[offsets[r]:offsets[r + 1]].tolist() for r in range(groups[i], groups[i + 1])]
        return out


def load_or_build(cache_dir: str, key: dict, build: Callable[[], tuple[list[dict], dict]], is_main: bool,
                  barrier: Callable[[], None]) -> tuple[Sequence, dict]:
    """The features of `key` and their meta: mapped from the cache, or built by the main rank (which
    writes them) while the others wait. Without a cache, every rank builds them in memory."""
    if not enabled(cache_dir):
        features, meta = build()
        return features, meta
    directory = Path(cache_dir) / DIRECTORY / fingerprint(key)
    if is_main and not (directory / "meta.json").is_file():
        features, meta = build()
        write(directory, features, {**meta, "key": key})
        del features
    barrier()
    mapped = Features(directory)
    return mapped, mapped.meta
