"""Which examples each training micro-batch holds: one task's seeded epochs, or a mix of tasks.

A micro-batch is a pure function of (seed, micro-batch index, rank), so a resumed run sees exactly
the batches it would have seen. In a mix, every micro-batch comes from one task, drawn with
probability p(task) ~ min(size, cap) ** (1 / temperature) (jiant's temperature sampler; T = 1 is
examples-proportional), and each task walks its own seeded epochs. Every rank draws the same task:
the same head runs everywhere (expert parallelism needs every rank in the same forward pass). With
`groupByLength`, a micro-batch holds examples of similar length (data.epoch_batches).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from stilts_contract.job import JobError

from . import data


def mix_weights(sizes: dict[str, int], temperature: float, cap: int) -> dict[str, float]:
    """Sampling probabilities of a mix: proportional to size, capped at `cap` examples (0: no cap),
    flattened by `temperature` (1: proportional; large: uniform)."""
    if temperature <= 0:
        raise JobError("hyperparameters.multitaskTemperature must be > 0")
    raw = {t: (min(n, cap) if cap else n) ** (1 / temperature) for t, n in sizes.items()}
    total = sum(raw.values())
    return {t: w / total for t, w in raw.items()}


@dataclass
class TrainingSet:
    """Encoded training features per task, each with its format's collate."""
    features: dict[str, list[dict]]
    collate: dict[str, Callable[[list[dict], int], dict]]
    weights: dict[str, float] | None = None  # a mix; None: one task
    cap: int = 0
    # Per-part batch transforms (masked-LM: masking, drawn from the loop's seeded generator).
    transforms: dict[str, Callable[[dict, "torch.Generator"], dict]] = field(default_factory=dict)
    # Parts mixed in on top of the others (the masked-LM ablation): an epoch is still one pass over the
    # other parts' examples, so it holds more micro-batches in all.
    mixed_in: tuple[str, ...] = ()
    tasks: list[str] = field(init=False)

    def __post_init__(self):
        self.tasks = list(self.features)
        if self.weights is None and len(self.tasks) != 1:
            raise RuntimeError("a training set of several tasks needs mixing weights")

    @property
    def epoch_size(self) -> int:
        """Examples in one epoch: a mix counts each task up to its cap; parts mixed in on top add their
        share of micro-batches."""
        own = sum(min(len(f), self.cap) if self.cap else len(f) for name, f in self.features.items()
                  if name not in self.mixed_in)
        on_top = sum(self.weights[name] for name in self.mixed_in) if self.mixed_in else 0.0
        return round(own / (1 - on_top))


class Stream:
    def __init__(self, training: TrainingSet, sched: data.Schedule, seed: int, total_micro: int,
                 group_by_length: bool = False):
        self.training, self.sched, self.seed, self.group_by_length = training, sched, seed, group_by_length
        if training.weights is None:
            self.sequence = None
            return
        names = training.tasks
        self.sequence = random.Random(f"{seed}-mix").choices(names, [training.weights[t] for t in names],
                                                              k=total_micro)
        per_step = sched.micro_batch * sched.world
        for name in names:
            if len(training.features[name]) < per_step:
                raise data.DataError(f"task {name}: {len(training.features[name])} training examples, fewer than one "
                                 f"micro-batch x world size ({per_step}); lower microBatchSize or give more data")
        seen: dict[str, int] = {}
        self.position = []
        for name in self.sequence:
            self.position.append(seen.get(name, 0))
            seen[name] = seen.get(name, 0) + 1

    def at(self, micro: int, rank: int) -> tuple[str, list[int]]:
        """The task and this rank's example indices of micro-batch `micro`."""
        if self.sequence is None:
            name = self.training.tasks[0]
            epoch, position = divmod(micro, self.sched.micro_batches_per_epoch)
            return name, self._epoch(name, len(self.training.features[name]), self.sched, epoch, rank)[position]
        name = self.sequence[micro]
        n = len(self.training.features[name])
        per_step = self.sched.micro_batch * self.sched.world
        own = data.Schedule(self.sched.micro_batch, self.sched.world, 1, n // per_step)
        epoch, position = divmod(self.position[micro], own.micro_batches_per_epoch)
        return name, self._epoch(name, n, own, epoch, rank)[position]

    @lru_cache(maxsize=32)
    def _epoch(self, name: str, n: int, sched: data.Schedule, epoch: int, rank: int) -> list[list[int]]:
        seed = self.seed if self.sequence is None else f"{self.seed}-{name}"
        return data.epoch_batches(n, sched, seed, epoch, rank, self._lengths(name))

    @lru_cache(maxsize=None)
    def _lengths(self, name: str):
        return data.padded_lengths(self.training.features[name]) if self.group_by_length else None
