"""job.json as the trainer reads it: the contract's model (stilts_contract.job) plus the one check
that needs the file system, that the parent job has finished."""

from __future__ import annotations

from pathlib import Path

from stilts_contract import job as contract
from stilts_contract.job import (BackboneRef, DeepSpeed, Hyperparameters, Job, JobError, MlmMix, MoE,  # noqa: F401
                                 dump)

from .checkpoint import is_complete


def _parent_finished(job: Job, source: str) -> Job:
    if job.parent and not is_complete(job.parent):
        raise JobError(f"{source}: field 'parent': {job.parent} has no COMPLETE marker "
                       "(the parent job has not finished; run it first)")
    return job


def parse(raw: dict, source: str = "job.json") -> Job:
    return _parent_finished(contract.parse(raw, source), source)


def load(path: str | Path) -> Job:
    return _parent_finished(contract.load(path), str(path))
