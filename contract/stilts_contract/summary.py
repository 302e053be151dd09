"""The summary a finished job leaves behind: the content of its COMPLETE marker and, on a cluster,
of the leader container's termination message (Kubernetes keeps 4096 bytes of it).

Executors count a job as succeeded only with a valid summary of *that* job's hash: an exit code of
0 alone is not proof. The schema is bounded, so a malformed or hostile message cannot break a
reconcile, the status or the metrics.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError

from .job import Model, first_error
from .names import PHASES, XNLI_LANGUAGES

MAX_BYTES = 4096  # what Kubernetes keeps of a termination message
Fraction = Field(ge=0, le=1)


class SummaryError(ValueError):
    """Not a valid summary of the expected job; the message says why."""


class Split(Model):
    dev: float = Fraction
    test: float = Fraction


class Summary(Model):
    model_config = ConfigDict(extra="ignore", alias_generator=Model.model_config["alias_generator"],
                              populate_by_name=True)
    phase: Literal[PHASES]
    job_hash: str = Field(..., min_length=1, max_length=64)
    task: str | None = Field(None, max_length=64)
    backbone: str = Field("", max_length=64)
    seed: int | None = None
    world_size: int = Field(1, ge=1, le=100_000)
    seconds: float | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=0)
    best_step: int | None = Field(None, ge=0)
    stopped_early: bool | None = None
    dev_score: float | None = Field(None, ge=0, le=1)
    average: Split | None = None
    test: dict[Literal[XNLI_LANGUAGES], float] | None = Field(None, max_length=len(XNLI_LANGUAGES))
    # evaluate: the share of each predicted label per language (a constant predictor shows as 1.0)
    predicted: dict[Literal[XNLI_LANGUAGES], list[float]] | None = Field(None, max_length=len(XNLI_LANGUAGES))
    alignment: float | None = Field(None, ge=0, le=1)  # pretrain: word-translation retrieval accuracy
    test_items: int | None = Field(None, ge=0, le=10_000_000)  # evaluate: items per language's test set
    # evaluate: the digest of the per-item results its log ends with (stilts_contract.items)
    items_digest: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")

    def compact(self) -> dict:
        """What an experiment's status keeps of it."""
        out = self.model_dump(by_alias=True, exclude_none=True,
                              include={"test", "average", "dev_score", "steps", "seconds", "alignment", "test_items",
                                       "items_digest"})
        # Four decimals resolve one example in 5,010 (an XNLI test set); more digits only grow the
        # results ConfigMap, which must hold the largest grid (about 2,000 jobs) under 1 MiB.
        return _rounded(out)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def encode(summary: dict) -> str:
    """The termination message: compact JSON of at most MAX_BYTES (long fields are dropped, not cut)."""
    text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    for key in ("dev", "predicted", "fetched"):
        if len(text.encode()) <= MAX_BYTES:
            break
        summary = {k: v for k, v in summary.items() if k != key}
        text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    return text


def parse(text: str, job_hash: str) -> Summary:
    """A valid summary of job `job_hash`, or SummaryError saying what is wrong."""
    if not text or not text.strip():
        raise SummaryError("the job exited 0 but left no summary (COMPLETE / termination message)")
    if len(text.encode()) > MAX_BYTES:
        raise SummaryError(f"the summary is over {MAX_BYTES} bytes")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise SummaryError(f"the summary is not JSON: {text[:120]!r}") from None
    if not isinstance(raw, dict):
        raise SummaryError("the summary is not a JSON object")
    try:
        summary = Summary.model_validate(raw)
    except ValidationError as err:
        where, message = first_error(err)
        raise SummaryError(f"the summary's {where or 'content'} is invalid: {message}") from None
    if summary.job_hash != job_hash:
        raise SummaryError(f"the summary is of job {summary.job_hash}, not {job_hash}")
    return summary
