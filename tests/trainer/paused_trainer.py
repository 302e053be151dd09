"""`python -m tests.trainer.paused_trainer --job job.json`: the trainer (`python -m stilts_trainer`'s own main),
paused at one point of its work so that a test's signal lands exactly there rather than wherever the clock puts
it. Under torchrun: `... -m tests.trainer.paused_trainer --job job.json`, run from the repository's root.

STILTS_TEST_PAUSE names the point (the first time the process gets there), STILTS_TEST_PAUSE_DIR where each rank
writes `paused-rank<RANK>` (its pid) once it waits there:

- `load_dataset`: in `datasets.load_dataset`, as a slow hub or volume would keep it;
- `resume`: in DeepSpeed's load_checkpoint, reading the first file of the checkpoint it resumes from;
- `predict`: in an evaluation pass (engine.predict), as a slow forward pass would keep it;
- `save`: in the model's save (engine.save_collective), as a slow volume would keep it;
- `last-step`: in the training loop's last step (its progress report).

A rank waits there until SIGTERM: outside the training loop the trainer's handler raises out of the wait, inside it
the handler sets the flag and the wait ends (the step then goes on). A rank the test SIGKILLs dies there.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

WAIT_SECONDS = 300


def requested() -> bool:
    """Whether the trainer's SIGTERM watch has its flag set (inside the training loop, the signal only sets it)."""
    watch = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(watch, "requested", False))


def pause() -> None:
    marker = Path(os.environ["STILTS_TEST_PAUSE_DIR"]) / f"paused-rank{os.environ.get('RANK', '0')}"
    marker.write_text(str(os.getpid()))
    deadline = time.time() + WAIT_SECONDS
    while time.time() < deadline and not requested():
        time.sleep(0.05)


def once(function, when=lambda *args, **kwargs: True):
    done = []

    def paused(*args, **kwargs):
        if not done and when(*args, **kwargs):
            done.append(True)
            pause()
        return function(*args, **kwargs)

    return paused


def plant(point: str) -> None:
    from stilts_trainer import engine, safe_load

    if point == "load_dataset":
        import datasets

        datasets.load_dataset = once(datasets.load_dataset)
    elif point == "resume":
        safe_load.SafeCheckpointEngine.load = once(safe_load.SafeCheckpointEngine.load)
    elif point == "predict":
        engine.predict = once(engine.predict)
    elif point == "save":
        engine.save_collective = once(engine.save_collective)
    elif point == "last-step":
        engine.write_progress = once(engine.write_progress, lambda output, phase, step, total, eta: step == total)
    else:
        raise SystemExit(f"STILTS_TEST_PAUSE: unknown point {point!r}")


if __name__ == "__main__":
    plant(os.environ["STILTS_TEST_PAUSE"])
    from stilts_trainer.__main__ import main

    sys.exit(main())
