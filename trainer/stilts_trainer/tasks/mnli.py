from .. import synthetic
from . import HubSplit, Task, pair_record, register

GLUE = "nyu-mll/glue"

SIZES = {"train": 8000, "dev": 1000, "test": 1000}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    # Distinct seeds per split keep train and dev apart.
    return synthetic.nli_examples(seed * 10 + ("train", "dev", "test").index(split), SIZES[split], language)


mnli = register(Task(
    name="mnli",
    description="MultiNLI: premise/hypothesis -> entailment, neutral, contradiction",
    labels=synthetic.NLI_LABELS,
    metric="accuracy",
    fields=("premise", "hypothesis", "label"),
    convert=pair_record("premise", "hypothesis"),
    hub={
        "train": (HubSplit(GLUE, "mnli", "train"),),
        "dev": (HubSplit(GLUE, "mnli", "validation_matched"),),
        "test": (HubSplit(GLUE, "mnli", "validation_mismatched"),),  # GLUE test labels are hidden
    },
    synthetic=make_synthetic,
    notes="also the target-phase training set for XNLI",
))
