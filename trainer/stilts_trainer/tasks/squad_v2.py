from . import HubSplit, Task, register
from .squad import converter, make_synthetic_squad

squad_v2 = register(Task(
    name="squad_v2",
    description="SQuAD v2.0: SQuAD v1.1 plus unanswerable questions (answer: no answer)",
    metric="exact match / F1",
    fields=("id", "question", "context", "answers"),
    convert=converter(version2=True),
    hub={"train": (HubSplit("rajpurkar/squad_v2", None, "train"),),
         "dev": (HubSplit("rajpurkar/squad_v2", None, "validation"),)},
    synthetic=lambda split, seed, language="en": make_synthetic_squad(split, seed, unanswerable=1 / 3),
    notes="predicts no answer when the <s> score beats the best span",
))
