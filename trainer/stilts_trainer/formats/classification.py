"""Sentence and sentence-pair classification (NLI, QQP, SST-2): <s> a </s></s> b </s> -> label."""

from __future__ import annotations

import torch

from ._heads import PooledHead, cross_entropy, ids_and_mask

NAME = "classification"
MAIN = "accuracy"


def check(example: dict, labels: tuple[str, ...]) -> str | None:
    if not isinstance(example.get("text_a"), str):
        return "text is not a string"
    if not 0 <= example["label"] < len(labels):
        return f"label is {example['label']}, expected 0..{len(labels) - 1} ({', '.join(labels)})"
    return None


def encode(examples: list[dict], tokenizer, max_length: int, labels=(), settings=None) -> list[dict]:
    texts_b = [e.get("text_b") for e in examples]
    enc = tokenizer([e["text_a"] for e in examples], texts_b if any(t is not None for t in texts_b) else None,
                    truncation=True, max_length=max_length)
    return [{"input_ids": ids, "label": e["label"]} for ids, e in zip(enc["input_ids"], examples)]


def collate(features: list[dict], pad_id: int) -> dict:
    batch = ids_and_mask([f["input_ids"] for f in features], pad_id)
    batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
    return batch


class Head(PooledHead):
    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__(hidden, num_labels, dropout)

    def forward(self, hidden_states: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        return super().forward(hidden_states)


def loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    return cross_entropy(logits, batch["labels"])


def predict(logits: torch.Tensor, batch: dict) -> list[int]:
    return logits.argmax(-1).tolist()


def score(examples: list[dict], features: list[dict], predictions: list[int]) -> dict:
    correct = sum(int(p == f["label"]) for p, f in zip(predictions, features))
    return {"accuracy": correct / max(1, len(features))}
