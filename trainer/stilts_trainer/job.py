"""job.json: the one contract between the executors and the trainer (see DESIGN.md).

Field names are camelCase, like the TransferExperiment spec they are derived from. Every check that
needs only the file happens here, before any process group or model exists, and fails with one
line naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from . import tasks
from .checkpoint import is_complete

PHASES = ("prefetch", "pretrain", "intermediate", "target", "evaluate")
TINY_MODELS = ("stilts/tiny-xlmr", "stilts/mini-xlmr")  # built offline by `pretrain`, see model.py


class JobError(ValueError):
    """Bad input: the message names the field and what to do."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class MoE(_Model):
    experts: int = Field(8, ge=1)
    top_k: int = Field(2, ge=1, le=2)
    every_n_layers: int = Field(2, ge=1)
    layers: list[int] | None = None
    capacity_factor: float = Field(1.25, gt=0)
    eval_capacity_factor: float = Field(2.0, gt=0)
    min_capacity: int = Field(4, ge=0)
    drop_tokens: bool = True
    noisy_gate_policy: Literal["none", "Jitter", "RSample"] = "none"
    aux_loss_weight: float = Field(0.01, ge=0)
    use_residual: bool = False
    expert_parallel_size: int = Field(1, ge=1)
    upcycle_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "MoE":
        if self.top_k > self.experts:
            raise ValueError(f"topK ({self.top_k}) cannot exceed experts ({self.experts})")
        if self.experts % self.expert_parallel_size:
            raise ValueError(f"expertParallelSize ({self.expert_parallel_size}) must divide experts ({self.experts})")
        return self


class Backbone(_Model):
    name: str
    model: str = Field(description="hub id, local path, or a built-in tiny model (stilts/tiny-xlmr)")
    architecture: Literal["dense", "moe"] = "dense"
    moe: MoE | None = None

    @model_validator(mode="after")
    def _moe_only_on_moe(self) -> "Backbone":
        if self.architecture == "dense" and self.moe is not None:
            raise ValueError("moe settings given for a dense backbone: set architecture: moe or drop moe")
        if self.architecture == "moe" and self.moe is None:
            self.moe = MoE()
        return self


class Hyperparameters(_Model):
    learning_rate: float = Field(1e-5, gt=0)
    batch_size: int = Field(32, ge=1, description="global batch: microBatchSize x world size x accumulation")
    micro_batch_size: int = Field(4, ge=1)
    epochs: float = Field(2, gt=0)
    max_steps: int = Field(0, ge=0, description="optimizer steps; 0 = from epochs")
    max_seq_length: int = Field(256, ge=8)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_every_steps: int = Field(1000, ge=1)
    eval_examples: int = Field(500, ge=1)
    early_stopping_patience: int = Field(30, ge=1, description="evaluations without gain before stopping")
    max_train_examples: int = Field(0, ge=0, description="0 = all")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    doc_stride: int = Field(128, ge=1, description="span tasks: overlap in tokens between windows of a long "
                            "context (capped at half the room left by the question)")
    multitask_temperature: float = Field(1.0, gt=0, description="multitask: p(task) ~ min(size, cap) ** (1/T); "
                                         "1 = proportional to size, larger = flatter")
    multitask_cap: int = Field(65536, ge=0, description="multitask: examples of a task counted for sampling "
                               "(0 = no cap)")


class DeepSpeed(_Model):
    zero_stage: int = Field(2, ge=0, le=3)
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"


class Prefetch(_Model):
    models: list[str] = []
    tasks: list[str] = []


class Job(_Model):
    api_version: Literal["stilts.dev/v1alpha1"] = "stilts.dev/v1alpha1"
    kind: Literal["TrainerJob"] = "TrainerJob"
    experiment: str = "local"
    job_hash: str = ""
    phase: Literal[PHASES]
    task: str | None = None
    languages: list[str] = []
    backbone: Backbone
    hyperparameters: Hyperparameters = Hyperparameters()
    deepspeed: DeepSpeed = DeepSpeed()
    seed: int = 1
    data_source: Literal["hub", "synthetic"] = "hub"
    mirror: str = ""
    cache_dir: str = ""
    data_dir: str = Field("", description="root of datasets that come from local files (CCGbank: "
                          "<dataDir>/ccgbank)")
    parent: str | None = None
    output: str
    checkpoint_every_steps: int = Field(500, ge=1)
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = no metrics endpoint")
    prefetch: Prefetch = Prefetch()
    labels: dict[str, str] = Field(default_factory=dict, description="display only: run, backbone, task")

    @model_validator(mode="after")
    def _phase_rules(self) -> "Job":
        needs_task = self.phase in ("intermediate", "target", "evaluate")
        if needs_task and not self.task:
            raise ValueError(f"task: phase {self.phase} needs a task")
        if self.task:
            try:
                task = tasks.get(self.task)
            except KeyError as err:
                raise ValueError(f"task: {err.args[0]}") from None
            if self.phase == "evaluate" and len(task.languages) < 2:
                raise ValueError(f"task: {self.task} is not a cross-lingual evaluation task (use xnli)")
            if self.phase in ("intermediate", "target") and self.task == "xnli":
                raise ValueError("task: xnli is evaluation only; train on mnli (zero-shot transfer)")
            local = [m for m in tasks.expand([self.task]) if tasks.get(m).local]
            if local and self.data_source == "hub" and not self.data_dir and self.phase != "evaluate":
                layout = tasks.get(local[0]).local
                raise ValueError(f"dataDir: task {self.task} reads {local[0]} from local files "
                                 f"(<dataDir>/{layout.directory}: {layout.layout}); set dataDir")
            unknown = sorted(set(self.languages) - set(task.languages))
            if unknown:
                raise ValueError(f"languages: {unknown} not in {self.task}'s languages {list(task.languages)}")
        if self.phase == "evaluate" and not self.languages:
            self.languages = list(tasks.get(self.task).languages)
        if self.phase == "evaluate" and not self.parent:
            raise ValueError("parent: evaluate needs the target phase's output directory")
        if self.backbone.model in TINY_MODELS and not self.parent and self.phase != "pretrain":
            raise ValueError(f"parent: {self.backbone.model} exists only after a pretrain job; give its output as parent")
        if self.backbone.moe and self.deepspeed.zero_stage == 3:
            raise ValueError("deepspeed.zeroStage: DeepSpeed MoE does not run under ZeRO-3; use 0, 1 or 2")
        return self


def _field(loc: tuple) -> str:
    parts = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(to_camel(str(item)) if "_" in str(item) else str(item))
    return ".".join(parts)


def load(path: str | Path) -> Job:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"{path}: no such file (pass --job with the path of a job.json)") from None
    except json.JSONDecodeError as err:
        raise JobError(f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    return parse(raw, str(path))


def parse(raw: dict, source: str = "job.json") -> Job:
    try:
        job = Job.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = _field(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise JobError(f"{source}: {'field ' + repr(where) + ': ' if where else ''}{message}") from None
    if job.parent and not is_complete(job.parent):
        raise JobError(f"{source}: field 'parent': {job.parent} has no COMPLETE marker "
                       "(the parent job has not finished; run it first)")
    return job


def dump(job: Job) -> dict:
    return job.model_dump(by_alias=True, mode="json")
