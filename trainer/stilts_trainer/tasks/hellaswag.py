import random

from .. import synthetic
from . import HubSplit, Task, register

SIZES = {"train": 4000, "dev": 600}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    """A situation and four continuations; only one is consistent with it (the others swap the
    verb for its opposite, change the object, or negate)."""
    rng = random.Random(f"hellaswag-{seed}-{split}")
    out = []
    for ind in range(SIZES[split]):
        c = synthetic.random_clause(rng)
        other = rng.choice([n for n in synthetic.NOUNS if n not in (c.object, c.subject)])
        endings = [f"{c.verb} the {c.object} .", f"{synthetic.ANTONYMS[c.verb]} the {c.object} .",
                   f"{c.verb} the {other} .", f"does not {c.verb} the {c.object} ."]
        order = list(range(4))
        rng.shuffle(order)
        ctx_a, ctx_b = synthetic.render(c, "en") + " .", f"then the {c.subject}"
        out.append({"ind": ind, "activity_label": "synthetic", "ctx_a": ctx_a, "ctx_b": ctx_b,
                    "ctx": f"{ctx_a} {ctx_b}", "endings": [endings[i] for i in order],
                    "source_id": f"synthetic~{ind}", "split": split, "split_type": "indomain",
                    "label": str(order.index(0))})
    return out


def convert(record: dict) -> dict | None:
    if record["label"] in ("", None):  # the test split's labels are hidden
        return None
    return {"context": record["ctx_a"], "choices": [f"{record['ctx_b']} {e}" for e in record["endings"]],
            "label": int(record["label"])}


hellaswag = register(Task(
    name="hellaswag",
    description="HellaSwag: pick the plausible continuation of a situation (4 endings)",
    metric="accuracy",
    labels=("0", "1", "2", "3"),
    fields=("ctx_a", "ctx_b", "endings", "label"),
    convert=convert,
    hub={"train": (HubSplit("Rowan/hellaswag", None, "train"),),
         "dev": (HubSplit("Rowan/hellaswag", None, "validation"),)},  # test labels are hidden
    synthetic=make_synthetic,
))
