"""Diagnostics of the offline world: how well a pretrained encoder aligns its languages.

Word-translation retrieval: each word's representation is its mean contextual hidden state over the
same sentences rendered into each language; for every English word, the nearest word of the other
language (cosine) should be its translation. Cognates are left out (they are the same tokens), so
the score measures alignment the model learned. Chance is 1 / (words compared), about 1-2%.
"""

from __future__ import annotations

import random

import torch

from . import synthetic

SENTENCES = 200


def _word_states(encoder, tokenizer, clauses, code: str, device) -> dict[str, torch.Tensor]:
    texts = [synthetic.render(clause, code) for clause in clauses]
    batch = tokenizer(texts, return_tensors="pt", return_offsets_mapping=True, padding=True)
    offsets = batch.pop("offset_mapping").tolist()
    with torch.no_grad():  # every rank runs the same batch: expert parallelism stays in step
        hidden = encoder(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state.float().cpu()
    sums: dict[str, list[torch.Tensor]] = {}
    for row, text in enumerate(texts):
        start = 0
        for word in text.split():
            start = text.index(word, start)
            pieces = [i for i, (a, b) in enumerate(offsets[row]) if b > a and a < start + len(word) and b > start]
            if pieces:
                sums.setdefault(word, []).append(hidden[row, pieces].mean(0))
            start += len(word)
    return {w: torch.stack(v).mean(0) for w, v in sums.items()}


def word_alignment(encoder, tokenizer, languages, device=torch.device("cpu")) -> dict[str, float]:
    """Per non-English language: the share of English content words whose nearest neighbour among the
    language's words is their translation."""
    rng = random.Random(f"alignment-{synthetic.WORLD}")
    clauses = [synthetic.corpus_clause(rng) for _ in range(SENTENCES)]
    was_training = encoder.training
    encoder.eval()
    english = _word_states(encoder, tokenizer, clauses, "en", device)
    scores = {}
    for code in languages:
        if code == "en":
            continue
        states = _word_states(encoder, tokenizer, clauses, code, device)
        pairs = [(e, f) for e, f in synthetic.word_pairs(code) if e in english and f in states]
        if not pairs:
            continue
        source = torch.nn.functional.normalize(torch.stack([english[e] for e, _ in pairs]), dim=-1)
        target = torch.nn.functional.normalize(torch.stack([states[f] for _, f in pairs]), dim=-1)
        scores[code] = round((source @ target.T).argmax(1).eq(torch.arange(len(pairs))).float().mean().item(), 4)
    encoder.train(was_training)
    return scores
