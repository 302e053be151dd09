"""Examples in, batches out.

Hub and synthetic data take the same path: records in the hub dataset's schema -> the task's
conversion -> encoded examples. Training batches are a seeded permutation sharded by rank (so a
resumed run can skip exactly the batches it already saw); evaluation batches are sorted by length
with dynamic padding, and every rank gets the same number of them (expert parallelism needs every
rank in every forward pass).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch

from . import tasks
from .tasks import Task


class DataError(ValueError):
    """The data does not match the task's schema; the message names the field."""


def hub_dataset_path(dataset: str, mirror: str) -> str:
    return os.path.join(mirror, "datasets", dataset) if mirror else dataset


def _hub_records(task: Task, split: str, language: str, mirror: str, cache_dir: str) -> list[dict]:
    import datasets

    sources = task.hub.get(split)
    if not sources:
        raise DataError(f"task {task.name} has no {split} split on the hub (has: {', '.join(task.hub)})")
    if len(task.languages) > 1:  # per-language configs (XNLI): read only the one asked for
        sources = tuple(s for s in sources if s.config == language)
    records: list[dict] = []
    for source in sources:
        ds = datasets.load_dataset(hub_dataset_path(source.dataset, mirror), source.config, split=source.split,
                                   cache_dir=cache_dir or None)
        missing = [f for f in task.fields if f not in ds.column_names]
        if missing:
            raise DataError(f"{source.dataset} ({source.config or 'default'}, {source.split}) lacks field "
                            f"{missing[0]!r}: task {task.name} reads {list(task.fields)}, the dataset has "
                            f"{ds.column_names}")
        records.extend(ds)
    return records


def load_examples(task_name: str, split: str, data_source: str, seed: int, language: str = "en",
                  mirror: str = "", cache_dir: str = "", limit: int = 0) -> list[dict]:
    task = tasks.get(task_name)
    if data_source == "synthetic":
        records = task.synthetic(split, seed, language)
    else:
        records = _hub_records(task, split, language, mirror, cache_dir)
    examples = []
    for i, record in enumerate(records):
        missing = [f for f in task.fields if f not in record]
        if missing:
            raise DataError(f"{task_name} {split} record {i} lacks field {missing[0]!r} "
                            f"(task {task_name} reads {list(task.fields)})")
        example = task.convert(record)
        if example is None:
            continue
        if not 0 <= example["label"] < task.num_labels:
            raise DataError(f"{task_name} {split} record {i}: field 'label' is {example['label']}, "
                            f"expected 0..{task.num_labels - 1} ({', '.join(task.labels)})")
        examples.append(example)
    if limit:
        examples = examples[:limit]
    return examples


def encode(examples: list[dict], tokenizer, max_length: int) -> list[dict]:
    texts_b = [e.get("text_b") for e in examples]
    enc = tokenizer([e["text_a"] for e in examples], texts_b if any(t is not None for t in texts_b) else None,
                    truncation=True, max_length=max_length)
    return [{"input_ids": ids, "label": e["label"]} for ids, e in zip(enc["input_ids"], examples)]


def collate(items: list[dict], pad_id: int) -> dict:
    """Pad to the longest item in the batch (dynamic padding)."""
    width = max(len(i["input_ids"]) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
        mask[row, : len(item["input_ids"])] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if "label" in items[0]:
        batch["labels"] = torch.tensor([i["label"] for i in items], dtype=torch.long)
    return batch


def pad_batch(batch: dict, rows: int, width: int, pad_id: int) -> dict:
    """Grow a batch to rows x width: padding tokens, masked out, labels ignored (-100)."""
    have_rows, have_width = batch["input_ids"].shape
    if (have_rows, have_width) == (rows, width):
        return batch
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}
    out = {}
    for key, value in batch.items():
        if value.dim() == 2:
            grown = torch.full((rows, width), fill[key], dtype=value.dtype)
            grown[:have_rows, :have_width] = value
        else:
            grown = torch.full((rows,), fill[key], dtype=value.dtype)
            grown[:have_rows] = value
        out[key] = grown
    return out


def mask_tokens(batch: dict, tokenizer, probability: float, generator: torch.Generator) -> dict:
    """BERT-style masking: of the chosen tokens 80% <mask>, 10% random, 10% unchanged."""
    ids = batch["input_ids"].clone()
    labels = ids.clone()
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special & (batch["attention_mask"] == 1)
    labels[~chosen] = -100
    roll = torch.rand(ids.shape, generator=generator)
    ids[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[swap] = random_ids[swap]
    return {"input_ids": ids, "attention_mask": batch["attention_mask"], "labels": labels}


@dataclass(frozen=True)
class Schedule:
    """How one phase walks its training data."""
    micro_batch: int
    world: int
    accumulation: int
    micro_batches_per_epoch: int  # per rank

    @property
    def steps_per_epoch(self) -> int:
        return self.micro_batches_per_epoch // self.accumulation


def schedule(num_examples: int, batch_size: int, micro_batch: int, world: int) -> Schedule:
    per_step = micro_batch * world
    if batch_size % per_step:
        raise ValueError(f"hyperparameters.batchSize ({batch_size}) must be a multiple of microBatchSize x world "
                         f"size ({micro_batch} x {world} = {per_step}); change batchSize or microBatchSize")
    accumulation = batch_size // per_step
    micro = num_examples // per_step
    micro -= micro % accumulation
    if micro == 0:
        raise ValueError(f"hyperparameters.batchSize ({batch_size}) is larger than the training set "
                         f"({num_examples} examples)")
    return Schedule(micro_batch, world, accumulation, micro)


def epoch_batches(num_examples: int, sched: Schedule, seed: int, epoch: int, rank: int) -> list[list[int]]:
    """This rank's micro-batches (example indices) for one epoch; the same on every restart."""
    order = list(range(num_examples))
    random.Random(f"{seed}-{epoch}").shuffle(order)
    per_step = sched.micro_batch * sched.world
    out = []
    for b in range(sched.micro_batches_per_epoch):
        chunk = order[b * per_step:(b + 1) * per_step]
        out.append(chunk[rank * sched.micro_batch:(rank + 1) * sched.micro_batch])
    return out


def eval_batches(lengths: list[int], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Length-sorted batches dealt round-robin to ranks, padded with empty batches so that every rank
    runs the same number of forward passes."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    per_rank = -(-len(batches) // world)
    mine = batches[rank::world]
    return mine + [[] for _ in range(per_rank - len(mine))]
