"""Task registry: one small module per task, registered by importing it here.

A task knows where its data lives on the hub (ids, configs, split names), how a hub record maps to
the trainer's example schema, and how to make a synthetic counterpart in the hub's own schema, so
that synthetic data goes through the same conversion as real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

FORMATS = ("classification", "multiple_choice", "span", "tagging")


@dataclass(frozen=True)
class HubSplit:
    """One hub dataset split feeding one of our splits (a task may union several, like ANLI+)."""
    dataset: str
    config: str | None
    split: str


@dataclass(frozen=True)
class Task:
    name: str
    format: str
    description: str
    labels: tuple[str, ...]
    metric: str
    fields: tuple[str, ...]                    # hub record fields the conversion reads
    convert: Callable[[dict], dict | None]     # hub record -> example (None drops it, e.g. no gold label)
    hub: dict[str, tuple[HubSplit, ...]]       # our split ("train", "dev", "test") -> hub splits
    synthetic: Callable[[str, int, str], list[dict]]  # (split, seed, language) -> hub-schema records
    languages: tuple[str, ...] = ("en",)
    paper_xnli: float | None = None            # XLM-R large + this task, XNLI test avg (Phang et al. 2020)
    notes: str = ""
    text_fields: tuple[str, ...] = field(default=("text_a", "text_b"))

    @property
    def num_labels(self) -> int:
        return len(self.labels)


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.format not in FORMATS:
        raise ValueError(f"task {task.name}: format must be one of {FORMATS}")
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
from . import anli, mnli, qqp, xnli  # noqa: E402,F401
