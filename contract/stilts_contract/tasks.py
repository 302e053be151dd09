"""What the control plane knows of each task: its traits, not its data.

The trainer's registry (trainer/stilts_trainer/tasks/) adds to each name the loaders, conversions
and synthetic generators; it takes format, members, languages and local-data layout from here, so
the two cannot drift. The operator reads these traits to validate specs and to write into a job
only the settings its task reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from .names import XNLI_LANGUAGES

FORMATS = ("classification", "multiple_choice", "span", "tagging")
MULTITASK = "multitask"  # the format of a task that mixes other tasks

# Hyperparameters that only some tasks read: a job of another task leaves them out of job.json, so
# changing them reruns only the jobs that read them (the job hash covers the body).
SPAN_SETTINGS = ("docStride", "spanMaxSeqLength")
MULTITASK_SETTINGS = ("multitaskTemperature", "multitaskCap")
TASK_SETTINGS = SPAN_SETTINGS + MULTITASK_SETTINGS


@dataclass(frozen=True)
class LocalData:
    """Data that no hub serves (licensed): users copy it to `<dataDir>/<directory>`."""
    directory: str
    layout: str  # what users put there, for the docs and errors


@dataclass(frozen=True)
class TaskTraits:
    name: str
    format: str                               # one of FORMATS, or MULTITASK
    members: tuple[str, ...] = ()             # MULTITASK: the tasks it mixes
    languages: tuple[str, ...] = ("en",)      # more than one: a cross-lingual evaluation task
    local: LocalData | None = None
    target_data: str = ""                     # how it overlaps the target's training data, if it does

    @property
    def evaluation_only(self) -> bool:
        return len(self.languages) > 1


CCGBANK = LocalData("ccgbank", "CCGbank release: data/AUTO/<section>/*.auto")
# The paper's nine, SQuAD as v1.1.
MULTITASK_MEMBERS = ("anli", "mnli", "qqp", "sst2", "squad", "hellaswag", "cosmosqa", "commonsenseqa", "ccg")

_TRAITS = (
    TaskTraits("anli", "classification", target_data="ANLI+ includes MNLI's training set, the target phase's data"),
    TaskTraits("mnli", "classification", target_data="MNLI is the target phase's training set"),
    TaskTraits("qqp", "classification"),
    TaskTraits("sst2", "classification"),
    TaskTraits("squad", "span"),
    TaskTraits("squad_v2", "span"),
    TaskTraits("hellaswag", "multiple_choice"),
    TaskTraits("cosmosqa", "multiple_choice"),
    TaskTraits("commonsenseqa", "multiple_choice"),
    TaskTraits("ccg", "tagging", local=CCGBANK),
    TaskTraits(MULTITASK, MULTITASK, members=MULTITASK_MEMBERS,
               target_data="the mix includes ANLI+ and MNLI, which hold the target phase's training set"),
    TaskTraits("xnli", "classification", languages=XNLI_LANGUAGES),
)
TASKS: dict[str, TaskTraits] = {t.name: t for t in _TRAITS}

INTERMEDIATE_TASKS = tuple(t.name for t in _TRAITS if not t.evaluation_only)
TARGET_TRAIN_TASKS = ("mnli",)
TARGET_EVAL_TASKS = ("xnli",)
# The default: the paper's nine less CCG (CCGbank is licensed; add ccg and multitask with dataDir).
DEFAULT_INTERMEDIATE_TASKS = tuple(m for m in MULTITASK_MEMBERS if m != "ccg")


def get(name: str) -> TaskTraits:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def expand(names) -> list[str]:
    """Task names with every mix replaced by its members, each once, in order."""
    out: list[str] = []
    for name in names:
        for member in get(name).members or (name,):
            if member not in out:
                out.append(member)
    return out


def settings_read(name: str) -> tuple[str, ...]:
    """The task-specific hyperparameters (TASK_SETTINGS) a task reads, members' included."""
    read: list[str] = []
    if get(name).format == MULTITASK:
        read += MULTITASK_SETTINGS
    if any(get(m).format == "span" for m in expand([name])):
        read += SPAN_SETTINGS
    return tuple(s for s in TASK_SETTINGS if s in read)


def local_members(name: str) -> list[str]:
    """The tasks (a mix's members included) that read local files under dataDir."""
    return [m for m in expand([name]) if get(m).local]


