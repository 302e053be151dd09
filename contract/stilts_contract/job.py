"""job.json: what an executor (local or operator) hands the trainer for one phase of one run.

The models here are also the building blocks of the TransferExperiment spec (operator/stilts/spec.py
extends them), so a default is written once: a field the planner does not write takes the same
value the spec would have given it. Field names are camelCase, like the spec. Every check that needs
only the file happens here, and fails with one line naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from . import rules, tasks
from .names import (JOB_API_VERSION, JOB_KIND, MAX_SEQ_LENGTH, PHASES, SYNTHETIC_WORLD, TINY_MODELS, TRAINING_PHASES,
                    XNLI_LANGUAGES)


class JobError(ValueError):
    """Bad input: the message names the field and what to do."""


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _raise(problem: str | None) -> None:
    if problem:
        raise ValueError(problem)


class MoE(Model):
    """Sparse upcycling: every k-th feed-forward block becomes a DeepSpeed MoE layer whose experts
    start as copies of that block, with a new router."""
    experts: int = Field(8, ge=1, le=256, description="Experts per MoE layer.")
    top_k: int = Field(2, ge=1, le=2, description="Experts per token. Top-2 renormalises its gate, so a "
                       "fresh upcycled model equals the dense one; top-1 scales by the raw router probability.")
    every_n_layers: int = Field(2, ge=1, le=64, description="Make every n-th layer an MoE layer (from the "
                                "second), unless layers is given.")
    layers: list[int] | None = Field(None, max_length=128, description="Explicit 0-based layer indices to "
                                     "upcycle; overrides everyNLayers.")
    capacity_factor: float = Field(1.25, gt=0, le=64, description="Expert capacity while training, as a "
                                   "multiple of tokens/experts.")
    eval_capacity_factor: float = Field(2.0, gt=0, le=64, description="Expert capacity at evaluation.")
    min_capacity: int = Field(4, ge=0, le=65536, description="Lower bound of each expert's capacity.")
    drop_tokens: bool = Field(True, description="Drop tokens over capacity (false: capacity grows to fit).")
    noisy_gate_policy: Literal["none", "Jitter", "RSample"] = Field("none", description="Router noise.")
    aux_loss_weight: float = Field(0.01, ge=0, le=10, description="Weight of the load-balancing loss.")
    use_residual: bool = Field(False, description="Residual MoE: a dense MLP beside the experts, mixed by a "
                               "learned coefficient.")
    expert_parallel_size: int = Field(8, ge=1, le=256, description="Ranks one layer's experts are spread "
                                      "over; must divide experts and the job's world size.")
    upcycle_steps: int = Field(0, ge=0, le=10_000_000, description="Continued masked-LM steps on the "
                               "upcycled model before the intermediate phase (0 = none).")

    @model_validator(mode="after")
    def _consistent(self) -> "MoE":
        _raise(rules.top_k_fits(self.top_k, self.experts))
        _raise(rules.ep_divides_experts(self.experts, self.expert_parallel_size))
        return self


class BackboneRef(Model):
    """What of a backbone a job needs: its model and architecture (the spec adds the launch shape)."""
    name: str = Field(..., min_length=1, max_length=20, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="Short name used in job names, labels and results (DNS label).")
    model: str = Field(..., min_length=1, max_length=200, description="Hub model id, a path on the volume, "
                       "or a built-in tiny model (stilts/tiny-xlmr, stilts/mini-xlmr) for synthetic data.")
    architecture: Literal["dense", "moe"] = Field("dense", description="dense, or moe: sparsely upcycled "
                                                  "from model.")
    moe: MoE | None = Field(None, description="MoE settings; only with architecture: moe (defaults apply "
                            "when omitted).")

    @model_validator(mode="after")
    def _moe_only_on_moe(self) -> "BackboneRef":
        _raise(rules.moe_settings_need_moe(self.architecture, self.moe is not None))
        return self

    @property
    def moe_settings(self) -> MoE | None:
        """The MoE settings in force (the defaults when omitted); None for a dense backbone."""
        return (self.moe or MoE()) if self.architecture == "moe" else None


class PhaseTraining(Model):
    """Hyperparameters of one phase (defaults: the authors' jiant XTREME scripts for XNLI)."""
    learning_rate: float = Field(1e-5, gt=0, le=1, description="Peak learning rate (Adam).")
    batch_size: int = Field(32, ge=1, le=65536, description="Global batch size (micro x world x accumulation).")
    micro_batch_size: int = Field(4, ge=1, le=4096, description="Examples per process per forward pass.")
    epochs: float = Field(2, gt=0, le=1000, description="Passes over the training set.")
    max_steps: int = Field(0, ge=0, le=100_000_000, description="Optimizer steps; overrides epochs when > 0.")
    max_seq_length: int = Field(256, ge=8, le=MAX_SEQ_LENGTH, description="Tokens per example after truncation "
                                f"(XLM-R holds {MAX_SEQ_LENGTH}).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps with linear warmup; linear "
                                "decay after.")
    eval_every_steps: int = Field(1000, ge=1, le=100_000_000, description="Evaluate on the English dev "
                                  "subset every n steps.")
    eval_examples: int = Field(500, ge=1, le=1_000_000, description="Size of that dev subset.")
    early_stopping_patience: int = Field(30, ge=1, le=100_000, description="Evaluations without gain "
                                         "before stopping.")
    max_train_examples: int = Field(0, ge=0, le=100_000_000, description="Cap on training examples "
                                    "(0 = all).")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay, not applied to biases and "
                                "LayerNorm weights (jiant's setting).")
    frozen_layers: int = Field(0, ge=0, le=100, description="Fine-tuning only: keep the embeddings and this many "
                               "bottom encoder layers fixed (0: fine-tune everything, as the paper does). Freezing "
                               "lower layers preserves cross-lingual alignment (Wu & Dredze 2019).")
    group_by_length: bool = Field(False, description="Batch training examples of similar length together (sorted "
                                  "within random groups of 50 micro-batches; batch order stays random), so batches "
                                  "carry little padding; every epoch holds the same examples. Off by default: where "
                                  "length goes with the label (NLI's neutral hypotheses run longer), batches skew "
                                  "toward one label, and the demo lost accuracy with it on.")


class TaskSettings(Model):
    """Settings only some tasks read (contract.tasks.TASK_SETTINGS): jobs of other tasks omit them."""
    doc_stride: int = Field(128, ge=1, le=8192, description="SQuAD: overlap in tokens between the windows of a "
                            "context longer than spanMaxSeqLength.")
    span_max_seq_length: int = Field(384, ge=16, le=MAX_SEQ_LENGTH, description="SQuAD: tokens per window, in place "
                                     "of maxSeqLength (jiant's XTREME setting: 384).")
    multitask_temperature: float = Field(1.0, gt=0, le=1000, description="multitask: sample tasks with "
                                         "p ~ min(size, multitaskCap)^(1/T); 1 = proportional to size.")
    multitask_cap: int = Field(65536, ge=0, le=100_000_000, description="multitask: examples of a task counted "
                               "when sampling (0 = no cap); keeps the large NLI sets from crowding out the rest.")


class MaskingSettings(Model):
    """Masked-LM pretraining only."""
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked (BERT: 0.15).")


class MlmMix(MaskingSettings):
    """The paper's ablation (Phang et al. 2020): intermediate training mixed with multilingual masked-LM.
    Every intermediate task then also runs as <task>-mlm, its own arm in the plan and the report."""
    weight: float = Field(0.5, gt=0, lt=1, description="Share of the intermediate phase's micro-batches that "
                          "are masked-LM. They come on top of the task's: an epoch still holds every task "
                          "example once (with maxSteps set, the task gets fewer steps instead).")
    languages: list[str] = Field(list(XNLI_LANGUAGES), min_length=1, max_length=15, description="Languages of "
                                 "the masked-LM corpus (default: XNLI's 15).")
    examples_per_language: int = Field(10000, ge=1, le=10_000_000, description="Corpus lines per language.")
    corpus: str = Field("wikimedia/wikipedia", min_length=1, max_length=200, description="Hub dataset of the "
                        "corpus (hub data; synthetic data uses the offline world's corpus).")
    corpus_config: str = Field("20231101.{lang}", min_length=1, max_length=200, description="Its config per "
                               "language; {lang} is replaced by the language code.")
    text_field: str = Field("text", min_length=1, max_length=100, description="The corpus column holding text.")

    @model_validator(mode="after")
    def _known_languages(self) -> "MlmMix":
        unknown = sorted(set(self.languages) - set(XNLI_LANGUAGES))
        _raise(unknown and f"languages: {unknown} are not XNLI languages {list(XNLI_LANGUAGES)}")
        _raise(len(set(self.languages)) != len(self.languages) and "languages: listed twice")
        return self


class Hyperparameters(TaskSettings, MaskingSettings, PhaseTraining):
    """One phase's hyperparameters as the trainer reads them: the spec's, plus settings the spec does
    not expose (their defaults are the paper's)."""
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)


class DeepSpeed(Model):
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage (MoE needs 0-2).")
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Mixed precision on GPUs; CPU "
                                                       "runs fp32.")
    compile_layers: bool = Field(False, description="Compile each encoder layer with torch.compile "
                                 "(regional compilation: one layer's graph serves all of them, so it compiles in "
                                 "about a layer's time). Off until measured on a GPU (benchmarks/gpu.py, V3); "
                                 "numerics differ at float rounding, so turning it on reruns the jobs.")


class Tracking(Model):
    """MLflow tracking of this job (docs/tracking.md). The executor writes it outside the job's hash, so
    turning tracking on reruns nothing; credentials come from the environment, never from this file."""
    uri: str = Field(..., min_length=1, description="tracking URI the trainer logs to")
    experiment_name: str = Field(..., min_length=1, description="MLflow experiment holding the runs")
    parent_key: str = Field(..., min_length=1, description="tag value that finds the experiment's parent run")
    parent_run_id: str = Field("", description="the parent run, when the executor could make it (else the "
                               "trainer finds or makes it by parentKey)")


class Prefetch(Model):
    models: list[str] = []
    tasks: list[str] = []


class Job(Model):
    api_version: Literal[JOB_API_VERSION] = JOB_API_VERSION
    kind: Literal[JOB_KIND] = JOB_KIND
    experiment: str = "local"
    job_hash: str = ""
    phase: Literal[PHASES]
    task: str | None = None
    languages: list[str] = []
    backbone: BackboneRef
    hyperparameters: Hyperparameters = Hyperparameters()
    deepspeed: DeepSpeed = DeepSpeed()
    seed: int = 1
    data_source: Literal["hub", "synthetic"] = "hub"
    synthetic_world: int = Field(SYNTHETIC_WORLD, ge=1, description="synthetic data: the generator version "
                                 "the job was planned for")
    mirror: str = ""
    cache_dir: str = ""
    data_dir: str = Field("", description="root of datasets that come from local files (CCGbank: "
                          "<dataDir>/ccgbank)")
    parent: str | None = None
    output: str
    checkpoint_every_steps: int = Field(500, ge=1)
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = no metrics endpoint")
    prefetch: Prefetch = Prefetch()
    mlm_mix: MlmMix | None = Field(None, description="intermediate phase only: mix in multilingual masked-LM")
    labels: dict[str, str] = Field(default_factory=dict, description="display only: run, backbone, task")
    tracking: Tracking | None = Field(None, description="MLflow tracking; none: the job is not tracked")

    @model_validator(mode="after")
    def _phase_rules(self) -> "Job":
        if self.phase in ("intermediate", "target", "evaluate") and not self.task:
            raise ValueError(f"task: phase {self.phase} needs a task")
        if self.task:
            try:
                task = tasks.get(self.task)
            except KeyError as err:
                raise ValueError(f"task: {err.args[0]}") from None
            if self.phase == "evaluate" and not task.evaluation_only:
                raise ValueError(f"task: {self.task} is not a cross-lingual evaluation task (use xnli)")
            if self.phase in ("intermediate", "target") and task.evaluation_only:
                raise ValueError(f"task: {self.task} is evaluation only; train on mnli (zero-shot transfer)")
            if self.phase != "evaluate":
                _raise(rules.local_data_needs_data_dir(self.task, self.data_source, self.data_dir))
            unknown = sorted(set(self.languages) - set(task.languages))
            if unknown:
                raise ValueError(f"languages: {unknown} not in {self.task}'s languages {list(task.languages)}")
            if self.phase == "evaluate" and not self.languages:
                self.languages = list(task.languages)
        if self.mlm_mix and self.phase != "intermediate":
            raise ValueError(f"mlmMix: only the intermediate phase mixes in masked-LM, not {self.phase}")
        if self.phase == "evaluate" and not self.parent:
            raise ValueError("parent: evaluate needs the target phase's output directory")
        if self.backbone.model in TINY_MODELS and not self.parent and self.phase != "pretrain":
            raise ValueError(f"parent: {self.backbone.model} exists only after a pretrain job; give its output "
                             "as parent")
        _raise(rules.no_zero3_with_moe(self.deepspeed.zero_stage, self.backbone.architecture))
        if self.data_source == "synthetic" and self.synthetic_world != SYNTHETIC_WORLD:
            raise ValueError(f"syntheticWorld: the job was planned for synthetic world {self.synthetic_world}, this "
                             f"trainer generates world {SYNTHETIC_WORLD}; plan it again with this version of stilts")
        return self


def _paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf field of a model, as dotted camelCase paths (nested models expanded)."""
    out = set()
    for name, info in model.model_fields.items():
        alias = info.alias or name
        nested = [t for t in getattr(info.annotation, "__args__", (info.annotation,))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        if nested:
            out |= _paths(nested[0], f"{prefix}{alias}.")
        else:
            out.add(prefix + alias)
    return out


PHASE_ONLY = {"hyperparameters.mlmProbability": ("pretrain",),
              "hyperparameters.groupByLength": TRAINING_PHASES,
              "prefetch.models": ("prefetch",), "prefetch.tasks": ("prefetch",), "languages": ("evaluate",)}
# Downloading trains nothing: prefetch reads no training settings (nor a seed: hub data has none).
TRAINING_ONLY = ("hyperparameters.", "deepspeed.", "checkpointEverySteps", "backbone.moe", "seed")
WRITTEN_BY_THE_TRAINER_ITSELF = {"apiVersion", "kind"}  # constants of the format


def applicable(phase: str, task: str | None, architecture: str, reads_local_data: bool,
               data_source: str = "synthetic", mixes_mlm: bool = False) -> set[str]:
    """The job.json fields the trainer reads for a job of this phase, task and architecture. Executors
    write every one of them (tests/test_contract.py checks the planner), so no job silently runs on a
    default the control plane never chose."""
    fields = _paths(Job) - WRITTEN_BY_THE_TRAINER_ITSELF
    if architecture != "moe":
        fields = {f for f in fields if not f.startswith("backbone.moe")}
    for path, phases in PHASE_ONLY.items():
        if phase not in phases:
            fields.discard(path)
    if phase == "prefetch":
        fields = {f for f in fields if not f.startswith(TRAINING_ONLY)}
    read = tasks.settings_read(task) if task else ()
    fields -= {f"hyperparameters.{s}" for s in tasks.TASK_SETTINGS if s not in read}
    if not task:
        fields.discard("task")
    if not reads_local_data:
        fields.discard("dataDir")
    if not mixes_mlm:  # the ablation's jobs only
        fields = {f for f in fields if not f.startswith("mlmMix")}
    if data_source != "synthetic":
        fields.discard("syntheticWorld")
    # Tracking is optional and changes no result: executors write it only for experiments that track.
    return {f for f in fields if not f.startswith("tracking.")}


def field_path(loc: tuple) -> str:
    """A pydantic error location as the user wrote it: `hyperparameters.batchSize`, `seeds[1]`."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            else:
                parts.append(f"[{item}]")
        else:
            parts.append(to_camel(str(item)) if "_" in str(item) else str(item))
    return ".".join(parts)


def first_error(err: ValidationError) -> tuple[str, str]:
    """(field path, message) of a validation error's first problem, worded for people."""
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field (check its spelling)"
    return field_path(first["loc"]), message


def parse(raw: dict, source: str = "job.json") -> Job:
    try:
        return Job.model_validate(raw)
    except ValidationError as err:
        where, message = first_error(err)
        raise JobError(f"{source}: {'field ' + repr(where) + ': ' if where else ''}{message}") from None


def load(path: str | Path) -> Job:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"{path}: no such file (pass --job with the path of a job.json)") from None
    except json.JSONDecodeError as err:
        raise JobError(f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(raw, dict):
        raise JobError(f"{path}: expected a JSON object")
    return parse(raw, str(path))


def dump(job: Job) -> dict:
    return job.model_dump(by_alias=True, mode="json")
