"""Task registry: one small module per task, registered by importing it here.

A task knows where its data lives on the hub (ids, configs, split names), how a hub record maps to
the trainer's example schema, and how to make a synthetic counterpart in the hub's own schema, so
that synthetic data goes through the same conversion as real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

MULTITASK = "multitask"  # the format of a task that is a mix of other tasks


@dataclass(frozen=True)
class HubSplit:
    """One hub dataset split feeding one of our splits (a task may union several, like ANLI+)."""
    dataset: str
    config: str | None
    split: str


@dataclass(frozen=True)
class LocalFiles:
    """Data that cannot come from a hub (licensed): read from `<dataDir>/<directory>` by `read`."""
    directory: str
    layout: str                                       # what users put there, for the docs and errors
    read: Callable[[str, str], list[dict]]            # (split, task directory) -> records


@dataclass(frozen=True)
class Task:
    name: str
    format: str                                # one of formats.NAMES, or MULTITASK
    description: str
    metric: str                                # as reported (the format scores it)
    labels: tuple[str, ...] = ()               # classes or choices; () = the tag set of the training data
    fields: tuple[str, ...] = ()               # record fields the conversion reads
    convert: Callable[[dict], dict | None] | None = None  # record -> example (None drops it: no gold label)
    hub: dict[str, tuple[HubSplit, ...]] = field(default_factory=dict)  # our split -> hub splits
    local: LocalFiles | None = None
    synthetic: Callable[[str, int, str], list[dict]] | None = None  # (split, seed, language) -> records
    members: tuple[str, ...] = ()              # MULTITASK: the tasks it mixes
    languages: tuple[str, ...] = ("en",)
    paper_xnli: float | None = None            # XLM-R large + this task, XNLI test avg (Phang et al. 2020)
    notes: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.hub) or (("train", "dev", "test") if self.local else ())

    @property
    def source(self) -> str:
        """Where real data comes from, in one line (for `tasks` and the README)."""
        if self.members:
            return "mix of " + ", ".join(self.members)
        if self.local:
            return f"local files: <dataDir>/{self.local.directory} ({self.local.layout})"
        return ", ".join(sorted({s.dataset + (f":{s.config}" if s.config and len(self.languages) == 1 else "")
                                 for split in self.hub.values() for s in split}))


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    from .. import formats

    if task.format not in formats.NAMES + (MULTITASK,):
        raise ValueError(f"task {task.name}: format must be one of {formats.NAMES + (MULTITASK,)}")
    if bool(task.members) != (task.format == MULTITASK):
        raise ValueError(f"task {task.name}: members are for (and required by) format {MULTITASK}")
    _REGISTRY[task.name] = task
    return task


def get(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def expand(names) -> list[str]:
    """Task names with every mix replaced by its members, each once, in order."""
    out: list[str] = []
    for name in names:
        for member in get(name).members or (name,):
            if member not in out:
                out.append(member)
    return out


def pair_record(a: str, b: str, label_field: str = "label") -> Callable[[dict], dict | None]:
    """Conversion for sentence-pair classification records; negative labels mean no gold label."""
    def convert(record: dict) -> dict | None:
        label = int(record[label_field])
        if label < 0:
            return None
        return {"text_a": record[a], "text_b": record[b], "label": label}
    return convert


# Importing registers. Adding a task = a module here plus one line below.
from . import (anli, ccg, commonsenseqa, cosmosqa, hellaswag, mnli, qqp, squad, squad_v2, sst2,  # noqa: E402,F401
               xnli)
from . import multitask  # noqa: E402,F401  (last: it checks its members are registered)
