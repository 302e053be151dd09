from .. import synthetic
from . import HubSplit, Task, pair_record, register

SIZES = {"train": 8000, "dev": 1000, "test": 1000}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    # ANLI+ mixes hard (adversarial) NLI with ordinary NLI, as the paper's union does.
    offset = 100 + ("train", "dev", "test").index(split)
    hard = synthetic.nli_examples(seed * 10 + offset, SIZES[split] // 2, language, hard=True)
    easy = synthetic.nli_examples(seed * 10 + offset + 50, SIZES[split] - len(hard), language)
    return hard + easy


def _rounds(split: str) -> tuple[HubSplit, ...]:
    return tuple(HubSplit("facebook/anli", None, f"{split}_r{r}") for r in (1, 2, 3))


anli = register(Task(
    name="anli",
    description="ANLI+: ANLI rounds 1-3 + MNLI + SNLI (the paper's union), 3-way NLI",
    labels=synthetic.NLI_LABELS,
    metric="accuracy",
    fields=("premise", "hypothesis", "label"),
    convert=pair_record("premise", "hypothesis"),
    hub={
        "train": _rounds("train") + (HubSplit("nyu-mll/glue", "mnli", "train"),
                                     HubSplit("stanfordnlp/snli", None, "train")),
        "dev": _rounds("dev"),
        "test": _rounds("test"),
    },
    synthetic=make_synthetic,
    notes="SNLI's unlabelled pairs (label -1) are dropped",
))
