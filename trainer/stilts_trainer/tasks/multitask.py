from stilts_contract.tasks import MULTITASK_MEMBERS

from . import Task, _REGISTRY, register

missing = [m for m in MULTITASK_MEMBERS if m not in _REGISTRY]
if missing:
    raise ImportError(f"multitask members {missing} are not registered; import them before multitask")

multitask = register(Task(
    name="multitask",
    description="all nine tasks at once: one head each on a shared encoder, batches sampled by task size",
    metric="mean of the members' metrics",
    notes="sampling: p(task) ~ min(size, multitaskCap) ** (1 / multitaskTemperature)",
))
