"""Names both sides must spell the same way."""

from __future__ import annotations

from enum import IntEnum

# A run's jobs, in order: [prefetch] -> [pretrain] -> [intermediate] -> target -> evaluate.
PHASES = ("prefetch", "pretrain", "intermediate", "target", "evaluate")
TRAINING_PHASES = ("pretrain", "intermediate", "target")

XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
BASELINE = "none"  # the intermediate task of a run that has none
MLM_ARM = "-mlm"   # suffix of the ablation's runs: <task>-mlm is <task> mixed with multilingual masked-LM


def plain_task(run_task: str) -> str:
    """The intermediate task of a run, without the ablation's suffix."""
    return run_task.removesuffix(MLM_ARM)

# Built offline by a `pretrain` job on the synthetic corpus (trainer/stilts_trainer/model.py).
TINY_MODELS = ("stilts/tiny-xlmr", "stilts/mini-xlmr")
MAX_SEQ_LENGTH = 512  # what XLM-R's position embeddings hold (514, less its padding offset); tiny models too

# The offline world's generator version (trainer/stilts_trainer/synthetic.py). Synthetic jobs carry it
# in job.json, so it is part of their hash: a new world never reuses results of an old one.
SYNTHETIC_WORLD = 2

JOB_API_VERSION = "stilts.dev/v1alpha1"
JOB_KIND = "TrainerJob"

COMPLETE = "COMPLETE"  # a job's commit marker, written last; it holds the job's summary (summary.py)
TRAIN_LOG = "train.log"  # each attempt's log, appended in the job's directory
EVENTS_DIR = "tensorboard"  # a training job's TensorBoard event files, in its directory (`stilts tensorboard`)
PROGRESS = "progress.json"  # step, total steps and ETA of a running training phase, rewritten as it goes


class Exit(IntEnum):
    """What the trainer's exit code means to the executors that decide about retries."""
    OK = 0            # COMPLETE was written
    FAILED = 1        # anything else: worth retrying (a lost node, a crash), and counted against the budget
    BAD_INPUT = 2     # the job cannot succeed as written; one line names the field. Never retried.
    PREEMPTED = 3     # stopped from outside (SIGTERM: preemption, a drain, a deletion) after committing a
    #                   checkpoint where it could; retried without spending a retry


def is_permanent(exit_code: int) -> bool:
    return exit_code == Exit.BAD_INPUT


def is_preempted(exit_code: int) -> bool:
    return exit_code == Exit.PREEMPTED


def launcher_exit(worker_codes: list[int], first: list[int] | None = None) -> int:
    """The one exit code for several processes that ran one job (a launcher's workers, a job's pods).

    Bad input wins: retrying cannot fix it. Otherwise the failure that came first decides, and `first`
    holds the codes of the processes that failed first (several: they failed together, or the order is
    not known). A preemption (3) is reported only when every one of them stopped on SIGTERM after
    committing; a crash among them is a failure, whatever its survivors exit with. This is what keeps a
    crash from being retried for free: once a worker fails, torchrun sends SIGTERM to the others, and
    those that are outside the training loop exit 3. Without `first` (the order is not known), a 3 is
    taken as the cause of the other failures (a preempted pod takes its peers' collectives with it)."""
    failed = [c for c in worker_codes if c != Exit.OK]
    if Exit.BAD_INPUT in failed or (first and Exit.BAD_INPUT in first):
        return Exit.BAD_INPUT
    if first is not None:
        cause = [c for c in first if c != Exit.OK]
        if cause:
            return Exit.PREEMPTED if all(c == Exit.PREEMPTED for c in cause) else Exit.FAILED
    if Exit.PREEMPTED in failed:
        return Exit.PREEMPTED
    return Exit.FAILED if failed else Exit.OK


def shutdown_timeout(grace: int) -> int:
    """What torchrun gives its workers after SIGTERM (TORCH_ELASTIC_SHUTDOWN_TIMEOUT) in a pod, or a local
    job, with `grace` seconds before SIGKILL: the grace less a margin to exit in."""
    return max(5, grace - max(5, grace // 10))
