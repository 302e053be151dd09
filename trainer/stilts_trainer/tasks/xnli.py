from .. import synthetic
from . import HubSplit, Task, pair_record, register

SIZES = {"dev": 300, "test": 1000}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    # One fixed evaluation set, rendered into every language (XNLI is one set, translated):
    # the seed of the run does not change the test data.
    return synthetic.nli_examples(9000 + ("dev", "test").index(split), SIZES[split], language)


xnli = register(Task(
    name="xnli",
    description="XNLI: MNLI-style NLI in 15 languages, evaluation only (zero-shot transfer)",
    labels=synthetic.NLI_LABELS,
    metric="accuracy",
    fields=("premise", "hypothesis", "label"),
    convert=pair_record("premise", "hypothesis"),
    hub={
        split: tuple(HubSplit("facebook/xnli", lang, hub_split) for lang in synthetic.XNLI_LANGUAGES)
        for split, hub_split in (("dev", "validation"), ("test", "test"))
    },
    synthetic=make_synthetic,
    notes="per-language hub config; the evaluate phase reads one language at a time",
))
