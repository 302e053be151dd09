"""Preemption: SIGTERM stops a training phase at a step boundary with a committed checkpoint.

Kubernetes sends SIGTERM to a pod's first process (the launcher, launch.py) and SIGKILL after the pod's
terminationGracePeriodSeconds; torchrun forwards the SIGTERM to its workers and waits
TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds for them (the operator sets both from the spec). A worker that
gets it finishes the step it is in; then every rank must stop at the same step, since a checkpoint is
collective and a preempted node's ranks take the others' collectives with them. So ranks exchange the
flag once per optimizer step over a CPU (gloo) group: a host operation, no device read. The last step
is no exception: a SIGTERM that arrives during it still commits that step's checkpoint and exits 3.

Outside the training loop (data preparation, resuming, evaluation, saving the model) there is no step
to finish: the signal stops the phase at once, and the next attempt redoes that part. `Preempted` is a
BaseException, as KeyboardInterrupt is, so that no `except Exception` on the way (ours, or a library's
that turns every error into its own) can make a preemption into bad input or an unreadable checkpoint.
Where a raise could still be lost (a library's bare `except:`, a finalizer running when the signal
lands), the flag stays set: `check()` at the loop's boundaries and the phase's safe points raises it
again, and a second SIGTERM raises again.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("stilts_trainer")


class Preempted(BaseException):
    """The phase stopped on SIGTERM; `step` is the committed checkpoint's step (None: no checkpoint).
    A BaseException: `except Exception` must not catch it (see the module's docstring)."""

    def __init__(self, step: int | None = None):
        super().__init__(f"stopped on SIGTERM{'' if step is None else f' after committing step {step}'}")
        self.step = step


class Watch:
    """One per process (`python -m stilts_trainer` installs it first thing; engine.init_distributed finds
    it). While `armed` (inside the training loop) SIGTERM only sets a flag that `agreed` shares with
    every rank; otherwise it raises Preempted where the process is."""

    def __init__(self, group=None, install: bool = True):
        self.group = group
        self.requested = False
        self.armed = False
        self._previous = signal.signal(signal.SIGTERM, self._handle) if install else None

    def _handle(self, signum, frame) -> None:
        first = not self.requested
        self.requested = True
        if not self.armed:
            raise Preempted()  # every time: a raise that something swallowed is raised again
        if first:
            log.warning("SIGTERM: finishing this step, then committing a checkpoint")

    def check(self) -> None:
        """A safe point outside the loop: stop now if a SIGTERM came (and its raise was lost)."""
        if self.requested and not self.armed:
            raise Preempted()

    def agreed(self, world: int) -> bool:
        """Whether any rank was told to stop (all ranks call this at the same step)."""
        if world == 1:
            return self.requested
        import torch
        import torch.distributed as dist

        flag = torch.tensor([int(self.requested)], dtype=torch.int32)  # host tensor, gloo group
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag[0])

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def installed() -> Watch | None:
    """The process's watch, if one handles SIGTERM."""
    handler = signal.getsignal(signal.SIGTERM)
    watch = getattr(handler, "__self__", None)
    return watch if isinstance(watch, Watch) else None
