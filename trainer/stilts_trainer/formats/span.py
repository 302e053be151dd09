"""Extractive span QA (SQuAD v1.1 and v2.0).

A context longer than the window is cut into overlapping windows (`docStride` tokens of overlap).
A token seen by several windows is scored only in the window where it has the most context on both
sides (BERT's "max context" rule), so an answer near a window's edge is read from the window that
sees it best. Training targets point at <s> when the window holds no answer, which is also how
SQuAD v2.0's unanswerable questions are learned; at prediction time v2.0 answers "" when the
<s> (null) score beats the best span. EM and F1 use the official SQuAD normalisation.
"""

from __future__ import annotations

import collections
import re
import string

import torch
from torch import nn

from ._heads import IGNORE, ids_and_mask

NAME = "span"
MAIN = "f1"
N_BEST = 20
MAX_ANSWER_TOKENS = 30


def check(example: dict, labels=()) -> str | None:
    for field in ("question", "context"):
        if not isinstance(example[field], str):
            return f"{field} is not a string"
    context = example["context"]
    if not example["answers"] and not example["version2"]:
        return "answers: empty, but every SQuAD v1.1 question has an answer (use squad_v2 for unanswerable ones)"
    for text, start in example["answers"]:
        if context[start:start + len(text)] != text:
            return (f"answers: answer_start {start} does not point at {text!r} in the context "
                    f"(found {context[start:start + len(text)]!r})")
    return None


def _question_budget(max_length: int) -> int:
    return max(4, max_length // 4)


def _cut_question(question: str, tokenizer, budget: int) -> str:
    """Long questions are cut (at a token boundary) so every window keeps room for context."""
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= budget:
        return question
    return question[: enc["offset_mapping"][budget - 1][1]]


def max_context(windows: list[list[int | None]]) -> list[list[bool]]:
    """For the windows of one example (each a list of context-token keys, None for non-context
    positions), whether each position is the key's window with the most context: min(left, right)
    + 0.01 x window length, the first window winning ties."""
    best: dict[int, tuple[float, int]] = {}
    for w, keys in enumerate(windows):
        positions = [p for p, k in enumerate(keys) if k is not None]
        n = len(positions)
        for j, p in enumerate(positions):
            s = min(j, n - 1 - j) + 0.01 * n
            if keys[p] not in best or s > best[keys[p]][0]:
                best[keys[p]] = (s, w)
    return [[k is not None and best[k][1] == w for k in keys] for w, keys in enumerate(windows)]


def encode(examples: list[dict], tokenizer, max_length: int, labels=(), settings=None) -> list[dict]:
    budget = _question_budget(max_length)
    questions = [_cut_question(e["question"], tokenizer, budget) for e in examples]
    room = max_length - budget - 4  # <s> q </s></s> c </s>
    stride = min(getattr(settings, "doc_stride", 128), room // 2)
    enc = tokenizer(questions, [e["context"] for e in examples], truncation="only_second", max_length=max_length,
                    stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    features: list[dict] = []
    for i, ids in enumerate(enc["input_ids"]):
        index = enc["overflow_to_sample_mapping"][i]
        sequence = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], sequence)]
        start = end = 0
        answers = examples[index]["answers"]
        if answers:
            text, char_start = answers[0]
            char_end = char_start + len(text)
            inside = [p for p, o in enumerate(offsets) if o is not None]
            if offsets[inside[0]][0] <= char_start and offsets[inside[-1]][1] >= char_end:
                start = next(p for p in inside if offsets[p][1] > char_start)
                end = next(p for p in reversed(inside) if offsets[p][0] < char_end)
        features.append({"input_ids": ids, "example": index, "offsets": offsets,
                         "start_position": start, "end_position": end})
    by_example = collections.defaultdict(list)
    for f in features:
        by_example[f["example"]].append(f)
    for windows in by_example.values():
        keys = [[o[0] if o is not None else None for o in f["offsets"]] for f in windows]
        for f, mask in zip(windows, max_context(keys)):
            f["max_context"] = mask
    return features


def collate(features: list[dict], pad_id: int) -> dict:
    batch = ids_and_mask([f["input_ids"] for f in features], pad_id)
    batch["start_positions"] = torch.tensor([f["start_position"] for f in features], dtype=torch.long)
    batch["end_positions"] = torch.tensor([f["end_position"] for f in features], dtype=torch.long)
    return batch


class Head(nn.Module):
    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.out = nn.Linear(hidden, 2)

    def forward(self, hidden_states: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        return self.out(hidden_states)  # (batch, tokens, start|end)


def loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    ce = nn.functional.cross_entropy
    logits = logits.float()
    return (ce(logits[..., 0], batch["start_positions"], ignore_index=IGNORE)
            + ce(logits[..., 1], batch["end_positions"], ignore_index=IGNORE)) / 2


def predict(logits: torch.Tensor, batch: dict) -> list[tuple]:
    """Per window: the best start and end candidates with their scores, and the null (<s>) score."""
    logits = logits.float().masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, float("-inf"))
    k = min(N_BEST, logits.shape[1])
    starts, ends = logits[..., 0].topk(k, dim=-1), logits[..., 1].topk(k, dim=-1)
    out = []
    for row in range(logits.shape[0]):
        out.append((list(zip(starts.indices[row].tolist(), starts.values[row].tolist())),
                    list(zip(ends.indices[row].tolist(), ends.values[row].tolist())),
                    float(logits[row, 0, 0] + logits[row, 0, 1])))
    return out


def best_answer(context: str, windows: list[dict], predictions: list[tuple], allow_null: bool) -> str:
    best_score, best_text, null = float("-inf"), "", float("inf")
    for feature, (starts, ends, null_score) in zip(windows, predictions):
        null = min(null, null_score)
        offsets, usable = feature["offsets"], feature["max_context"]
        for s, s_score in starts:
            if s >= len(offsets) or offsets[s] is None or not usable[s]:
                continue
            for e, e_score in ends:
                if e >= len(offsets) or offsets[e] is None or e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                    continue
                if s_score + e_score > best_score:
                    best_score = s_score + e_score
                    best_text = context[offsets[s][0]:offsets[e][1]].strip()
    if allow_null and null > best_score:
        return ""
    return best_text


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def score(examples: list[dict], features: list[dict], predictions: list[tuple]) -> dict:
    grouped: dict[int, tuple[list, list]] = collections.defaultdict(lambda: ([], []))
    for f, p in zip(features, predictions):
        grouped[f["example"]][0].append(f)
        grouped[f["example"]][1].append(p)
    em = f1_total = 0.0
    for index, example in enumerate(examples):
        windows, preds = grouped.get(index, ([], []))
        answer = best_answer(example["context"], windows, preds, example["version2"])
        golds = [text for text, _ in example["answers"]] or [""]
        em += max(float(normalize(answer) == normalize(g)) for g in golds)
        f1_total += max(f1(answer, g) for g in golds)
    n = max(1, len(examples))
    return {"exact_match": em / n, "f1": f1_total / n}
