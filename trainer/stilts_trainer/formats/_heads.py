"""Pieces the format heads share."""

from __future__ import annotations

import torch
from torch import nn

IGNORE = -100


class PooledHead(nn.Module):
    """RoBERTa's classification head: <s> -> dense -> tanh -> dropout -> outputs."""

    def __init__(self, hidden: int, outputs: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, outputs)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out(x)


def pad_rows(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def ids_and_mask(rows: list[list[int]], pad_id: int) -> dict:
    ids = pad_rows(rows, pad_id)
    mask = pad_rows([[1] * len(r) for r in rows], 0)
    return {"input_ids": ids, "attention_mask": mask}


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                       ignore_index=IGNORE)
