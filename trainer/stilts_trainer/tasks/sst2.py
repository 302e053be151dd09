import random

from .. import synthetic
from . import HubSplit, Task, register

SIZES = {"train": 6000, "dev": 800}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    """Sentiment carried by the verb (likes: positive, hates: negative) and flipped by negation,
    so a bag of words is not enough."""
    rng = random.Random(f"sst2-{seed}-{split}")
    out = []
    for idx in range(SIZES[split]):
        clause = synthetic.random_clause(rng)
        positive = rng.random() < 0.5
        negated = rng.random() < 0.3
        verb = clause.verb if positive != negated else synthetic.ANTONYMS[clause.verb]
        clause = synthetic.Clause(clause.subject, clause.subject_adj, verb, clause.object, clause.object_adj,
                                  negated, clause.place)
        out.append({"sentence": synthetic.render(clause, "en"), "label": int(positive), "idx": idx})
    return out


def convert(record: dict) -> dict | None:
    label = int(record["label"])
    return None if label < 0 else {"text_a": record["sentence"], "label": label}


sst2 = register(Task(
    name="sst2",
    description="SST-2: binary sentiment of a single sentence",
    metric="accuracy",
    labels=("negative", "positive"),
    fields=("sentence", "label"),
    convert=convert,
    hub={"train": (HubSplit("nyu-mll/glue", "sst2", "train"),),
         "dev": (HubSplit("nyu-mll/glue", "sst2", "validation"),)},  # GLUE test labels are hidden
    synthetic=make_synthetic,
))
