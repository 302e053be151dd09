from .. import synthetic
from . import HubSplit, Task, pair_record, register

SIZES = {"train": 8000, "dev": 1000, "test": 1000}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    return synthetic.paraphrase_examples(seed * 10 + 200 + ("train", "dev", "test").index(split), SIZES[split])


qqp = register(Task(
    name="qqp",
    description="Quora Question Pairs: are two questions duplicates",
    labels=("not_duplicate", "duplicate"),
    metric="accuracy",
    fields=("question1", "question2", "label"),
    convert=pair_record("question1", "question2"),
    hub={
        "train": (HubSplit("nyu-mll/glue", "qqp", "train"),),
        "dev": (HubSplit("nyu-mll/glue", "qqp", "validation"),),
    },
    synthetic=make_synthetic,
))
