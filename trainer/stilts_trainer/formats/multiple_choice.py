"""Multiple choice (HellaSwag, CosmosQA, CommonsenseQA): each (context, choice) pair is encoded
separately, one score per pair, softmax over the choices."""

from __future__ import annotations

import torch

from ._heads import PooledHead, pad_rows
from .classification import loss, predict, score  # noqa: F401  (one label per example, over the choices)

NAME = "multiple_choice"
MAIN = "accuracy"


def check(example: dict, labels: tuple[str, ...]) -> str | None:
    choices = example["choices"]
    if len(choices) != len(labels) or not all(isinstance(c, str) for c in choices):
        return f"choices: expected {len(labels)} strings, got {choices!r:.200}"
    if not 0 <= example["label"] < len(labels):
        return f"label is {example['label']}, expected 0..{len(labels) - 1}"
    return None


def encode(examples: list[dict], tokenizer, max_length: int, labels=(), settings=None) -> list[dict]:
    contexts = [e["context"] for e in examples for _ in e["choices"]]
    choices = [c for e in examples for c in e["choices"]]
    ids = tokenizer(contexts, choices, truncation=True, max_length=max_length)["input_ids"]
    out, at = [], 0
    for e in examples:
        n = len(e["choices"])
        out.append({"input_ids": ids[at:at + n], "label": e["label"]})
        at += n
    return out


def collate(features: list[dict], pad_id: int) -> dict:
    rows = [choice for f in features for choice in f["input_ids"]]
    ids = pad_rows(rows, pad_id)
    mask = pad_rows([[1] * len(r) for r in rows], 0)
    shape = (len(features), len(features[0]["input_ids"]), ids.shape[-1])
    return {"input_ids": ids.view(shape), "attention_mask": mask.view(shape),
            "labels": torch.tensor([f["label"] for f in features], dtype=torch.long)}


class Head(PooledHead):
    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__(hidden, 1, dropout)

    def forward(self, hidden_states: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        # The encoder saw (examples x choices) rows; fold the scores back to one row per example.
        return super().forward(hidden_states).view(input_shape[:-1])
