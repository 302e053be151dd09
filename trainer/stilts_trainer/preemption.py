"""Preemption: SIGTERM stops a training phase at a step boundary with a committed checkpoint.

Kubernetes sends SIGTERM to a pod's first process (the launcher, launch.py) and SIGKILL after the pod's
terminationGracePeriodSeconds; torchrun forwards the SIGTERM to its workers and waits
TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds for them (the operator sets both from the spec). A worker that
gets it finishes the step it is in; then every rank must stop at the same step, since a checkpoint is
collective and a preempted node's ranks take the others' collectives with them. So ranks exchange the
flag once per optimizer step over a CPU (gloo) group: a host operation, no device read.

Outside the training loop (data preparation, evaluation, saving the model) there is no step to finish:
the signal stops the phase at once, and the next attempt redoes that part.
"""

from __future__ import annotations

import logging
import signal

import torch
import torch.distributed as dist

log = logging.getLogger("stilts_trainer")


class Preempted(Exception):
    """The phase stopped on SIGTERM; `step` is the committed checkpoint's step (None: no checkpoint)."""

    def __init__(self, step: int | None = None):
        super().__init__(f"stopped on SIGTERM{'' if step is None else f' after committing step {step}'}")
        self.step = step


class Watch:
    """One per process (engine.init_distributed installs it). While `armed` (inside the training loop) SIGTERM only sets a flag
    that `agreed` shares with every rank; otherwise it raises Preempted where the process is."""

    def __init__(self, group=None, install: bool = True):
        self.group = group
        self.requested = False
        self.armed = False
        self._previous = signal.signal(signal.SIGTERM, self._handle) if install else None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            return
        self.requested = True
        if not self.armed:
            raise Preempted()
        log.warning("SIGTERM: finishing this step, then committing a checkpoint")

    def agreed(self, world: int) -> bool:
        """Whether any rank was told to stop (all ranks call this at the same step)."""
        if world == 1:
            return self.requested
        flag = torch.tensor([int(self.requested)], dtype=torch.int32)  # host tensor, gloo group
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag[0])

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

