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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from stilts_contract import rules
from stilts_contract.job import JobError

from . import formats, tasks
from .tasks import Task


class DataError(ValueError):
    """The data cannot be used as it is (missing, wrong schema); the message names the dataset or
    field. Retrying cannot help: the trainer exits 2."""


class HubUnavailable(RuntimeError):
    """The hub (or the network to it) failed for now; retrying may help: the trainer exits 1."""


def _transient(err: BaseException) -> bool:
    """Connection trouble, timeouts, rate limits and server errors pass; everything else will not."""
    while err is not None:
        name = type(err).__name__
        if isinstance(err, (ConnectionError, TimeoutError)) or "Timeout" in name or "Connect" in name:
            return True
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int) and (status >= 500 or status == 429):
            return True
        err = err.__cause__ or err.__context__
    return False


def load_hub_split(source, mirror: str, cache_dir: str):
    """One hub dataset split; any failure becomes one line naming the dataset, config, split and revision."""
    import datasets

    where = f"{source.dataset} ({source.config or 'default'}, {source.split}" + \
        (f", revision {source.revision})" if source.revision else ")")
    try:
        return datasets.load_dataset(hub_dataset_path(source.dataset, mirror), source.config, split=source.split,
                                     revision=None if mirror else source.revision, cache_dir=cache_dir or None)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; each becomes one line. A SIGTERM
        # here (preemption.Preempted, a BaseException) is not one of them: it passes, and the trainer exits 3.
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        line = f"{where} could not be loaded: {type(err).__name__}: {reason}"
        if _transient(err):
            raise HubUnavailable(line) from None
        raise DataError(line) from None


def hub_dataset_path(dataset: str, mirror: str) -> str:
    return os.path.join(mirror, "datasets", dataset) if mirror else dataset


def _hub_records(task: Task, split: str, language: str, mirror: str, cache_dir: str) -> list[dict]:
    sources = task.hub.get(split)
    if not sources:
        raise DataError(f"task {task.name} has no {split} split on the hub (has: {', '.join(task.hub)})")
    if len(task.languages) > 1:  # per-language configs (XNLI): read only the one asked for
        sources = tuple(s for s in sources if s.config == language)
    records: list[dict] = []
    for source in sources:
        ds = load_hub_split(source, mirror, cache_dir)
        missing = [f for f in task.fields if f not in ds.column_names]
        if missing:
            raise DataError(f"{source.dataset} ({source.config or 'default'}, {source.split}) lacks field "
                            f"{missing[0]!r}: task {task.name} reads {list(task.fields)}, the dataset has "
                            f"{ds.column_names}")
        records.extend(ds)
    return records


def _local_records(task: Task, split: str, data_dir: str) -> list[dict]:
    if not data_dir:
        raise DataError(f"dataDir: task {task.name} reads local files ({task.local.layout}); set dataDir to the "
                        f"directory holding {task.local.directory}/")
    try:
        return task.read_local(split, os.path.join(data_dir, task.local.directory))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"dataDir: task {task.name}: {err}") from None


def load_examples(task_name: str, split: str, data_source: str, seed: int, language: str = "en",
                  mirror: str = "", cache_dir: str = "", limit: int = 0, data_dir: str = "") -> list[dict]:
    """A task's examples in its format's schema, checked record by record (errors name the field)."""
    task = tasks.get(task_name)
    if data_source == "synthetic":
        records = task.synthetic(split, seed, language)
    elif task.local:
        records = _local_records(task, split, data_dir)
    else:
        records = _hub_records(task, split, language, mirror, cache_dir)
    fmt = formats.get(task.format)
    examples = []
    for i, record in enumerate(records):
        missing = [f for f in task.fields if f not in record]
        if missing:
            raise DataError(f"{task_name} {split} record {i} lacks field {missing[0]!r} "
                            f"(task {task_name} reads {list(task.fields)})")
        try:
            example = task.convert(record)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{task_name} {split} record {i}: fields {list(task.fields)} do not have the "
                            f"expected shape ({type(err).__name__}: {err})") from None
        if example is None:
            continue
        problem = fmt.check(example, task.labels)
        if problem:
            raise DataError(f"{task_name} {split} record {i}: field {problem}")
        examples.append(example)
        if limit and len(examples) == limit:
            break
    return examples


def encode(task: Task, examples: list[dict], tokenizer, max_length: int, labels: tuple[str, ...],
           settings=None) -> list[dict]:
    return formats.get(task.format).encode(examples, tokenizer, max_length, labels, settings)


def collate_tokens(items: list[dict], pad_id: int) -> dict:
    """Unlabelled text (masked-LM): pad to the longest item in the batch."""
    from .formats._heads import ids_and_mask

    return ids_and_mask([i["input_ids"] for i in items], pad_id)


def pack(sequences: list[list[int]], max_length: int) -> list[list[int]]:
    """Consecutive token sequences joined into rows of at most `max_length` (RoBERTa's full-sentence
    packing): short lines cost no padding, so a masked-LM step learns from every position it computes."""
    rows, row = [], []
    for ids in sequences:
        ids = ids[:max_length]
        if row and len(row) + len(ids) > max_length:
            rows.append(row)
            row = []
        row = row + ids
    if row:
        rows.append(row)
    return rows


def pad_batch(batch: dict, shape: tuple[int, ...], pad_id: int) -> dict:
    """Grow every tensor of a batch to `shape` (input_ids' shape; a target keeps its own rank):
    padding tokens, masked out, targets ignored (-100)."""
    if tuple(batch["input_ids"].shape) == tuple(shape):
        return batch
    fill = {"input_ids": pad_id, "attention_mask": 0}
    out = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        grown = torch.full(tuple(shape[: value.dim()]), fill.get(key, -100), dtype=value.dtype)
        grown[tuple(slice(0, n) for n in value.shape)] = value
        out[key] = grown
    return out


def mask_tokens(batch: dict, tokenizer, probability: float, generator: torch.Generator) -> dict:
    """BERT-style masking: of the chosen tokens 80% <mask>, 10% random, 10% unchanged."""
    ids = batch["input_ids"].clone()
    labels = ids.clone()
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
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
    problem = rules.batch_fits_world(batch_size, micro_batch, world)
    if problem:
        raise JobError(f"hyperparameters.{problem}")
    per_step = micro_batch * world
    accumulation = batch_size // per_step
    micro = num_examples // per_step
    micro -= micro % accumulation
    if micro == 0:
        raise JobError(f"hyperparameters.batchSize ({batch_size}) is larger than the training set "
                         f"({num_examples} examples)")
    return Schedule(micro_batch, world, accumulation, micro)


LENGTH_GROUP = 50  # micro-batches per length group (Hugging Face's group_by_length uses 50 batches too)


def epoch_batches(num_examples: int, sched: Schedule, seed: int | str, epoch: int, rank: int,
                  lengths: Sequence[int] | None = None) -> list[list[int]]:
    """This rank's micro-batches (example indices) for one epoch; the same on every restart.

    With `lengths` (each example's padded length), examples are grouped by length: the epoch's shuffled
    order is cut into groups of LENGTH_GROUP global micro-batches, each group sorted by length and cut
    again, and all the micro-batches shuffled. An epoch holds the same examples, each batch holds
    examples of similar length (so little padding), and neither batch order nor a group's members
    follow length."""
    order = list(range(num_examples))
    rng = random.Random(f"{seed}-{epoch}")
    rng.shuffle(order)
    per_step = sched.micro_batch * sched.world
    chunks = [order[b * per_step:(b + 1) * per_step] for b in range(sched.micro_batches_per_epoch)]
    if lengths is not None:
        used = np.asarray(order[:len(chunks) * per_step], dtype=np.int64)
        size = np.asarray(lengths)[used]
        group = LENGTH_GROUP * per_step
        grouped = np.concatenate([used[g:g + group][np.argsort(size[g:g + group], kind="stable")]
                                  for g in range(0, len(used), group)]).tolist()
        chunks = [grouped[b * per_step:(b + 1) * per_step] for b in range(len(chunks))]
        rng.shuffle(chunks)
    return [chunk[rank * sched.micro_batch:(rank + 1) * sched.micro_batch] for chunk in chunks]


def padded_lengths(features: Sequence[dict]) -> Sequence[int]:
    """Each feature's length once collated: its tokens, or its longest choice's (multiple choice)."""
    if hasattr(features, "padded_lengths"):  # mapped from the feature cache: from its offsets, nothing decoded
        return features.padded_lengths("input_ids")
    return [max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)
            for ids in (f["input_ids"] for f in features)]


def eval_batches(lengths: Sequence[int], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Length-sorted batches dealt round-robin to ranks, padded with empty batches so that every rank
    runs the same number of forward passes."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    per_rank = -(-len(batches) // world)
    mine = batches[rank::world]
    return mine + [[] for _ in range(per_rank - len(mine))]
