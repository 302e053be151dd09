"""Task registry: one small module per task, registered by importing it here.

A task knows where its data lives on the hub (ids, configs, split names), how a hub record maps to
the trainer's example schema, and how to make a synthetic counterpart in the hub's own schema, so
that synthetic data goes through the same conversion as real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stilts_contract import tasks as contract
from stilts_contract.tasks import MULTITASK, expand  # noqa: F401


PARQUET_EXPORT = "refs/convert/parquet"  # the hub's parquet conversion of a repo that ships a loading script


@dataclass(frozen=True)
class HubSplit:
    """One hub dataset split feeding one of our splits (a task may union several, like ANLI+)."""
    dataset: str
    config: str | None
    split: str
    revision: str | None = None  # a branch or commit of the hub repo (e.g. its parquet export)


@dataclass(frozen=True)
class Task:
    """A task's data. Its traits (format, members, languages, local-data layout) come from the
    contract (stilts_contract.tasks), which the operator reads too."""
    name: str
    description: str
    metric: str                                # as reported (the format scores it)
    labels: tuple[str, ...] = ()               # classes or choices; () = the tag set of the training data
    fields: tuple[str, ...] = ()               # record fields the conversion reads
    convert: Callable[[dict], dict | None] | None = None  # record -> example (None drops it: no gold label)
    hub: dict[str, tuple[HubSplit, ...]] = field(default_factory=dict)  # our split -> hub splits
    read_local: Callable[[str, str], list[dict]] | None = None  # (split, <dataDir>/<directory>) -> records
    synthetic: Callable[[str, int, str], list[dict]] | None = None  # (split, seed, language) -> records
    notes: str = ""

    @property
    def traits(self) -> contract.TaskTraits:
        return contract.get(self.name)

    @property
    def format(self) -> str:
        return self.traits.format

    @property
    def members(self) -> tuple[str, ...]:
        return self.traits.members

    @property
    def languages(self) -> tuple[str, ...]:
        return self.traits.languages

    @property
    def local(self) -> contract.LocalData | None:
        return self.traits.local

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
    traits = task.traits  # a task the contract does not know is refused here (KeyError)
    if bool(task.read_local) != bool(traits.local):
        raise ValueError(f"task {task.name}: a reader of local files is for (and required by) tasks with local data")
    if traits.format != contract.MULTITASK and not (task.convert and task.synthetic):
        raise ValueError(f"task {task.name}: needs a conversion and a synthetic generator")
    _REGISTRY[task.name] = task
    return task


def get(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


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
