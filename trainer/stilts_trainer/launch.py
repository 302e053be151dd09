"""`python -m stilts_trainer.launch [torchrun options] -m stilts_trainer --job job.json`: torchrun, with
the trainer's exit codes kept.

torchrun itself exits 1 whenever a worker fails, and 1 again when it is sent SIGTERM: a bad job.json
(exit 2) would be retried and a preempted pod (exit 3) would spend a retry. This runs torchrun's own
`run` and reports one of the workers' codes instead (stilts_contract.names.launcher_exit); a SIGTERM
to the launcher itself (the pod's first process, the one Kubernetes signals) is a preemption. The
workers get the SIGTERM from torchrun and have TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds to commit.
"""

from __future__ import annotations

import sys

from stilts_contract.names import Exit, launcher_exit


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        torchrun.run(args)
    except SignalException as err:
        print(f"stilts_trainer.launch: {err}; the workers were told to commit a checkpoint", file=sys.stderr)
        return Exit.PREEMPTED
    except ChildFailedError as err:
        return launcher_exit([failure.exitcode for failure in err.failures.values()])
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
