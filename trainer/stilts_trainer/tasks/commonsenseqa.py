import random

from .. import synthetic
from . import HubSplit, Task, register

SIZES = {"train": 4000, "dev": 600}
LETTERS = ("A", "B", "C", "D", "E")
OPPOSITES = {**synthetic.ANTONYMS, **{v: k for k, v in synthetic.ANTONYMS.items()}}


def make_synthetic(split: str, seed: int, language: str = "en") -> list[dict]:
    """Questions answered from the synthetic world's lexical knowledge (opposites, synonyms), not
    from a passage: five candidate words, one right."""
    rng = random.Random(f"commonsenseqa-{seed}-{split}")
    out = []
    for i in range(SIZES[split]):
        if rng.random() < 0.7:
            concept = rng.choice(sorted(OPPOSITES))
            answer, question = OPPOSITES[concept], f"if the cat does not {concept} the dog , what does it do ?"
            pool = sorted(set(OPPOSITES) - {concept, answer})
        else:
            concept = rng.choice(sorted(synthetic.SYNONYMS))
            answer, question = synthetic.SYNONYMS[concept], f"what word means {concept} ?"
            pool = sorted(set(synthetic.ADJECTIVES + list(synthetic.SYNONYMS.values())) - {concept, answer})
        texts = rng.sample(pool, 4) + [answer]
        rng.shuffle(texts)
        out.append({"id": f"synthetic-{split}-{i}", "question": question, "question_concept": concept,
                    "choices": {"label": list(LETTERS), "text": texts},
                    "answerKey": LETTERS[texts.index(answer)]})
    return out


def convert(record: dict) -> dict | None:
    if not record["answerKey"]:  # the test split's answers are hidden
        return None
    choices = record["choices"]
    return {"context": record["question"], "choices": list(choices["text"]),
            "label": list(choices["label"]).index(record["answerKey"])}


commonsenseqa = register(Task(
    name="commonsenseqa",
    description="CommonsenseQA: questions needing world knowledge, 5 answers",
    metric="accuracy",
    labels=LETTERS,
    fields=("question", "choices", "answerKey"),
    convert=convert,
    hub={"train": (HubSplit("tau/commonsense_qa", None, "train"),),
         "dev": (HubSplit("tau/commonsense_qa", None, "validation"),)},  # test answers are hidden
    synthetic=make_synthetic,
))
