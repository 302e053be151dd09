import random

from .. import synthetic
from . import HubSplit, Task, register

SIZES = {"train": 4000, "dev": 500}


def _base(verb: str) -> str:
    return verb[:-1] if verb.endswith("s") else verb


def make_synthetic_squad(split: str, seed: int, unanswerable: float = 0.0) -> list[dict]:
    """Passages of 3-6 sentences with one question each, in SQuAD's schema (character offsets).
    Passages run past a short maxSeqLength, so windows (docStride) matter. With `unanswerable`,
    that share of questions asks about a subject the passage never mentions (SQuAD v2.0)."""
    name = "squad_v2" if unanswerable else "squad"
    rng = random.Random(f"{name}-{seed}-{split}")
    out = []
    for i in range(SIZES[split]):
        subjects = rng.sample(synthetic.NOUNS, rng.randint(3, 6))
        clauses = []
        for subject in subjects:
            c = synthetic.random_clause(rng)
            obj = c.object if c.object != subject else rng.choice([n for n in synthetic.NOUNS if n != subject])
            clauses.append(synthetic.Clause(subject, c.subject_adj, c.verb, obj, c.object_adj, place=c.place))
        context, starts = "", []
        for c in clauses:
            starts.append(len(context))
            context += synthetic.render(c, "en") + " . "
        context = context.strip()
        asked = rng.randrange(len(clauses))
        c = clauses[asked]
        texts, answer_starts = [], []
        if unanswerable and rng.random() < unanswerable:
            subject = rng.choice([n for n in synthetic.NOUNS if n not in subjects and n not in context.split()])
        else:
            subject = c.subject
            sentence = synthetic.render(c, "en")
            phrase_at = starts[asked] + sentence.index(f" {c.verb} the ") + len(c.verb) + 2
            phrase = "the " + (f"{c.object_adj} " if c.object_adj else "") + c.object
            texts.append(phrase)
            answer_starts.append(phrase_at)
            if split != "train":  # dev sets carry several gold answers, as SQuAD's do
                texts.append(c.object)
                answer_starts.append(phrase_at + len(phrase) - len(c.object))
        out.append({"id": f"{name}-{split}-{i}", "title": "synthetic", "context": context,
                    "question": f"what does the {subject} {_base(c.verb)} ?",
                    "answers": {"text": texts, "answer_start": answer_starts}})
    return out


def converter(version2: bool):
    def convert(record: dict) -> dict:
        answers = record["answers"]
        return {"id": record["id"], "question": record["question"], "context": record["context"],
                "answers": list(zip(answers["text"], answers["answer_start"])), "version2": version2}
    return convert


squad = register(Task(
    name="squad",
    description="SQuAD v1.1: extractive QA over Wikipedia paragraphs",
    metric="exact match / F1",
    fields=("id", "question", "context", "answers"),
    convert=converter(version2=False),
    hub={"train": (HubSplit("rajpurkar/squad", None, "train"),),
         "dev": (HubSplit("rajpurkar/squad", None, "validation"),)},
    synthetic=lambda split, seed, language="en": make_synthetic_squad(split, seed),
    notes="the answer span's character offsets must match the context",
))
