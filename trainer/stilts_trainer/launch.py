"""`python -m stilts_trainer.launch [torchrun options] -m stilts_trainer --job job.json`: torchrun, with
the trainer's exit codes kept.

torchrun itself exits 1 whenever a worker fails, and 1 again when it is sent SIGTERM: a bad job.json
(exit 2) would be retried and a preempted pod (exit 3) would spend a retry. This runs torchrun's own
`run` and reports one code for the workers instead (stilts_contract.names.launcher_exit):

- Bad input (a worker exited 2) wins.
- SIGTERM to the launcher itself (the pod's first process, the one Kubernetes signals) is a preemption,
  3, when it came while every worker still ran: the workers get the SIGTERM from torchrun and have
  TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds to commit, and whatever they exit with then follows from it.
  When a worker had already failed before the signal came, that failure decides (1), as it does
  without a signal. Another signal (SIGINT, SIGHUP: nobody commits a checkpoint on those) is a failure.
- Without a signal to the launcher, the earliest failure decides (torchrun's failure records carry the
  time each was seen): once a worker crashes, torchrun sends SIGTERM to the others, and one outside
  the training loop exits 3; that 3 must not turn the crash into a free retry. Workers that all exit 3
  (their ranks shared the stop flag of another pod's SIGTERM) are a preemption.
"""

from __future__ import annotations

import signal
import sys

from stilts_contract.names import Exit, launcher_exit


class Exits:
    """What torchrun's agent saw of its workers: each worker's exit code (None: running) when it began to
    shut them down, and the processes, for their codes afterwards. torchrun keeps these to itself when
    it is signalled, so the agent is subclassed to note them (`record`)."""

    def __init__(self):
        self.before: dict[int, int | None] | None = None
        self._handlers: dict = {}

    def record(self, agent) -> None:
        handlers = getattr(getattr(agent, "_pcontext", None), "subprocess_handlers", None)
        if not isinstance(handlers, dict):  # another torch: nothing noted, the signal alone decides
            return
        self._handlers = handlers
        self.before = {rank: h.proc.poll() for rank, h in handlers.items()}

    def after(self) -> dict[int, int | None]:
        return {rank: h.proc.poll() for rank, h in self._handlers.items()}


def recording_agent(base, exits: Exits):
    class RecordingAgent(base):
        def _shutdown(self, *args, **kwargs):
            exits.record(self)  # the last call before a signal's shutdown is the one that counts
            return super()._shutdown(*args, **kwargs)

    RecordingAgent.__name__ = RecordingAgent.__qualname__ = base.__name__
    return RecordingAgent


def signalled_exit(signum: int, before: dict[int, int | None] | None, after: dict[int, int | None]) -> int:
    """The launcher was signalled: `before` are the workers' codes when the shutdown began (None: running;
    the whole dict None: not known), `after` once it ended."""
    codes = [-signal.SIGKILL if c is None else c for c in after.values()]
    failed_before = [c for c in (before or {}).values() if c not in (None, Exit.OK)]
    if failed_before:  # a worker failed first: its failure, not the signal, ends the job
        return launcher_exit(codes + failed_before, first=failed_before)
    if before and all(c is not None for c in before.values()):  # every worker had ended well: done
        return launcher_exit(codes)
    return launcher_exit(codes, first=[Exit.PREEMPTED if signum == signal.SIGTERM else Exit.FAILED])


def failed_exit(failures) -> int:
    """torchrun's ChildFailedError.failures (local rank -> ProcessFailure): the earliest decides."""
    records = list(failures.values())
    codes = [f.exitcode for f in records]
    times = [getattr(f, "timestamp", None) for f in records]
    if None in times:  # the order is not known: 3 only if every worker exited 3
        return launcher_exit(codes, first=codes)
    earliest = min(times)
    return launcher_exit(codes, first=[c for c, t in zip(codes, times) if t == earliest])


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher import api as launcher_api

    args = torchrun.parse_args(sys.argv[1:] if argv is None else argv)
    exits = Exits()
    launcher_api.LocalElasticAgent = recording_agent(launcher_api.LocalElasticAgent, exits)
    try:
        torchrun.run(args)
    except SignalException as err:
        after = exits.after()
        code = signalled_exit(err.sigval, exits.before, after)
        print(f"stilts_trainer.launch: {err}; workers by local rank, when it came {exits.before}, "
              f"after stopping {after}: exit {code}", file=sys.stderr)
        return code
    except ChildFailedError as err:
        code = failed_exit(err.failures)
        seen = {rank: (f.exitcode, getattr(f, "timestamp", None)) for rank, f in err.failures.items()}
        print(f"stilts_trainer.launch: failed workers by local rank (exit code, time seen) {seen}: exit {code}",
              file=sys.stderr)
        return code
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
