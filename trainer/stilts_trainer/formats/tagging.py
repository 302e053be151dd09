"""Token tagging (CCG supertagging): one tag per word, predicted at the word's first sub-word.

The tag set comes from the training data; a dev tag never seen in training cannot be predicted and
counts as wrong, as do words cut off by maxSeqLength: tag accuracy is over every gold word.
"""

from __future__ import annotations

import torch
from torch import nn

from ._heads import IGNORE, cross_entropy, ids_and_mask, pad_rows

NAME = "tagging"
MAIN = "tag_accuracy"
UNSEEN = -1  # a gold tag outside the training tag set (never a training target)


def check(example: dict, labels=()) -> str | None:
    tokens, tags = example["tokens"], example["tags"]
    if not tokens:
        return "tokens: empty sentence"
    if len(tokens) != len(tags):
        return f"tags: {len(tags)} tags for {len(tokens)} tokens"
    return None


def tag_set(examples: list[dict]) -> tuple[str, ...]:
    return tuple(sorted({t for e in examples for t in e["tags"]}))


def encode(examples: list[dict], tokenizer, max_length: int, labels=(), settings=None) -> list[dict]:
    ids = {tag: i for i, tag in enumerate(labels)}
    enc = tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True,
                    max_length=max_length)
    features = []
    for i, example in enumerate(examples):
        targets, previous = [], None
        for word in enc.word_ids(i):
            first = word is not None and word != previous
            targets.append(ids.get(example["tags"][word], UNSEEN) if first else IGNORE)
            previous = word
        features.append({"input_ids": enc["input_ids"][i], "labels": targets, "words": len(example["tokens"])})
    return features


def collate(features: list[dict], pad_id: int) -> dict:
    batch = ids_and_mask([f["input_ids"] for f in features], pad_id)
    batch["labels"] = pad_rows([f["labels"] for f in features], IGNORE)
    return batch


class Head(nn.Module):
    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, hidden_states: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        return self.out(self.dropout(hidden_states))


def loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    return cross_entropy(logits, batch["labels"])


def predict(logits: torch.Tensor, batch: dict) -> list[list[int]]:
    """Per sentence: (gold, predicted) ids at each word start."""
    best = logits.argmax(-1)
    out = []
    for row in range(logits.shape[0]):
        starts = batch["labels"][row] != IGNORE
        out.append(list(zip(batch["labels"][row][starts].tolist(), best[row][starts].tolist())))
    return out


def score(examples: list[dict], features: list[dict], predictions: list[list]) -> dict:
    correct = sum(int(gold == guess) for pairs in predictions for gold, guess in pairs if gold != UNSEEN)
    words = sum(f["words"] for f in features)
    return {"tag_accuracy": correct / max(1, words)}
