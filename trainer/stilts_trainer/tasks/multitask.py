from . import MULTITASK, Task, _REGISTRY, register

# The paper's nine, SQuAD as v1.1.
MEMBERS = ("anli", "mnli", "qqp", "sst2", "squad", "hellaswag", "cosmosqa", "commonsenseqa", "ccg")
missing = [m for m in MEMBERS if m not in _REGISTRY]
if missing:
    raise ImportError(f"multitask members {missing} are not registered; import them before multitask")

multitask = register(Task(
    name="multitask",
    format=MULTITASK,
    description="all nine tasks at once: one head each on a shared encoder, batches sampled by task size",
    metric="mean of the members' metrics",
    members=MEMBERS,
    notes="sampling: p(task) ~ min(size, multitaskCap) ** (1 / multitaskTemperature)",
))
