"""Task formats: how a format's examples become model inputs, which head reads the encoder, and how
its predictions are scored. One module per format, each with the same functions:

- `check(example, labels)`: None, or an error naming the bad field of a converted example;
- `encode(examples, tokenizer, max_length, labels, settings)`: features (token ids, targets, and
  what scoring needs, e.g. character offsets for spans);
- `collate(features, pad_id)`: tensors, padded to the longest feature of the batch;
- `Head(hidden, num_labels, dropout)`: reads the encoder's hidden states; `loss(logits, batch)`;
- `predict(logits, batch)`: one small picklable prediction per feature (gathered across ranks);
- `score(examples, features, predictions)`: the metrics, with `MAIN` the one selection uses.

Targets are -100 where nothing is to be predicted (padding, inner sub-words, padded rows).
"""

from __future__ import annotations

from types import ModuleType

from . import classification, multiple_choice, span, tagging
from ._heads import IGNORE  # noqa: F401  (the target value nothing is predicted for)

_FORMATS = {m.NAME: m for m in (classification, multiple_choice, span, tagging)}
NAMES = tuple(_FORMATS)


def get(name: str) -> ModuleType:
    return _FORMATS[name]
