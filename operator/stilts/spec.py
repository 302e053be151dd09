"""TransferExperiment.spec: the one typed model, with the paper's defaults.

The CRD's OpenAPI schema is generated from these classes (crd.py), so descriptions here are what
`kubectl explain` prints. Cross-field rules are CEL expressions, written once in RULES: the API
server enforces them from the CRD, and `stilts` evaluates the same expressions on local files.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

GROUP, VERSION, KIND, PLURAL, SHORT = "stilts.dev", "v1alpha1", "TransferExperiment", "transferexperiments", "tx"
API_VERSION = f"{GROUP}/{VERSION}"

# Kept equal to the trainer's task registry by tests/test_spec.py (the operator does not import torch).
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
INTERMEDIATE_TASKS = ("anli", "mnli", "qqp", "sst2", "squad", "squad_v2", "hellaswag", "cosmosqa",
                      "commonsenseqa", "ccg", "multitask")
SPAN_TASKS = ("squad", "squad_v2", "multitask")      # read hyperparameters.docStride
LOCAL_DATA_TASKS = ("ccg", "multitask")               # read local files under dataDir (CCGbank is licensed)
MULTITASK = "multitask"
# The default: the paper's nine less CCG (CCGbank is licensed; add ccg and multitask with dataDir).
DEFAULT_INTERMEDIATE_TASKS = ("anli", "mnli", "qqp", "sst2", "squad", "hellaswag", "cosmosqa", "commonsenseqa")
TINY_MODELS = ("stilts/tiny-xlmr", "stilts/mini-xlmr")
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SpecError(ValueError):
    """An invalid experiment; the message names the field and the fix."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class MoE(_Model):
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


class Backbone(_Model):
    """One model family of the comparison, and the shape of its PyTorchJobs."""
    name: str = Field(..., min_length=1, max_length=20, pattern=NAME_PATTERN,
                      description="Short name used in job names, labels and results (DNS label).")
    model: str = Field(..., min_length=1, max_length=200, description="Hub model id, a path on the volume, "
                       "or a built-in tiny model (stilts/tiny-xlmr, stilts/mini-xlmr) for synthetic data.")
    architecture: Literal["dense", "moe"] = Field("dense", description="dense, or moe: sparsely upcycled "
                                                  "from model.")
    moe: MoE | None = Field(None, description="MoE settings; only with architecture: moe (defaults apply "
                            "when omitted).")
    workers: int = Field(1, ge=1, le=64, description="Pods per PyTorchJob (Master + Workers).")
    gpus_per_worker: int = Field(8, ge=0, le=16, description="GPUs (and trainer processes) per pod; 0 runs "
                                 "one CPU process per pod.")


class PhaseTraining(_Model):
    """Hyperparameters of one phase (defaults: the authors' jiant XTREME scripts for XNLI)."""
    learning_rate: float = Field(1e-5, gt=0, le=1, description="Peak learning rate (Adam).")
    batch_size: int = Field(32, ge=1, le=65536, description="Global batch size (micro x world x accumulation).")
    micro_batch_size: int = Field(4, ge=1, le=4096, description="Examples per process per forward pass.")
    epochs: float = Field(2, gt=0, le=1000, description="Passes over the training set.")
    max_steps: int = Field(0, ge=0, le=100_000_000, description="Optimizer steps; overrides epochs when > 0.")
    max_seq_length: int = Field(256, ge=8, le=8192, description="Tokens per example after truncation.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps with linear warmup; linear "
                                "decay after.")
    eval_every_steps: int = Field(1000, ge=1, le=100_000_000, description="Evaluate on the English dev "
                                  "subset every n steps.")
    eval_examples: int = Field(500, ge=1, le=1_000_000, description="Size of that dev subset.")
    early_stopping_patience: int = Field(30, ge=1, le=100_000, description="Evaluations without gain "
                                         "before stopping.")
    max_train_examples: int = Field(0, ge=0, le=100_000_000, description="Cap on training examples "
                                    "(0 = all).")


class PretrainTraining(PhaseTraining):
    """Masked-LM: building a tiny backbone offline, and the MoE upcycle phase (its steps come from
    moe.upcycleSteps)."""
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Peak learning rate (Adam).")
    batch_size: int = Field(64, ge=1, le=65536, description="Global batch size (micro x world x accumulation).")
    micro_batch_size: int = Field(8, ge=1, le=4096, description="Examples per process per forward pass.")
    epochs: float = Field(1, gt=0, le=1000, description="Passes over the corpus.")


class IntermediateTraining(PhaseTraining):
    """Intermediate-task phase: 3 epochs for every task (STILTs' setting; see README)."""
    epochs: float = Field(3, gt=0, le=1000, description="Passes over the training set.")
    doc_stride: int = Field(128, ge=1, le=8192, description="SQuAD: overlap in tokens between the windows of a "
                            "context longer than maxSeqLength.")
    multitask_temperature: float = Field(1.0, gt=0, le=1000, description="multitask: sample tasks with "
                                         "p ~ min(size, multitaskCap)^(1/T); 1 = proportional to size.")
    multitask_cap: int = Field(65536, ge=0, le=100_000_000, description="multitask: examples of a task counted "
                               "when sampling (0 = no cap); keeps the large NLI sets from crowding out the rest.")


class Training(_Model):
    """Per-phase hyperparameters."""
    pretrain: PretrainTraining = Field(default_factory=PretrainTraining, description=PretrainTraining.__doc__)
    intermediate: IntermediateTraining = Field(default_factory=IntermediateTraining,
                                               description=IntermediateTraining.__doc__)
    target: PhaseTraining = Field(default_factory=PhaseTraining, description="Target-task phase on English "
                                  "MNLI (jiant's XTREME XNLI settings).")


class Target(_Model):
    task: Literal["xnli"] = Field("xnli", description="Zero-shot evaluation task.")
    train_task: Literal["mnli"] = Field("mnli", description="English training set of the target phase.")
    languages: list[Literal[XNLI_LANGUAGES]] = Field(list(XNLI_LANGUAGES), min_length=1, max_length=15,
                                                     description="XNLI languages to evaluate.")


class DeepSpeed(_Model):
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage (MoE needs 0-2).")
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Mixed precision on GPUs; CPU "
                                                       "runs fp32.")


class Storage(_Model):
    claim_name: str = Field("", max_length=253, description="Existing ReadWriteMany claim for checkpoints; "
                            "empty: the operator creates one.")
    size: str = Field("2Ti", max_length=20, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$",
                      description="Size of a created claim.")
    storage_class_name: str = Field("", max_length=253, description="Storage class of a created claim "
                                    "(empty: the cluster default).")
    retain_on_delete: bool = Field(True, description="Keep checkpoints when the experiment is deleted.")


class Retries(_Model):
    limit: int = Field(3, ge=0, le=100, description="Retries of a failed job before its run is Failed.")
    backoff_seconds: int = Field(60, ge=0, le=86400, description="First retry delay; doubles each time.")


class Toleration(_Model):
    key: str = Field("", max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = Field("", max_length=63)
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: int | None = None


class Scheduling(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels trainer pods need.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32,
                                          description="Tolerations of trainer pods.")
    priority_class_name: str = Field("", max_length=253, description="PriorityClass of trainer pods.")


class ExperimentSpec(_Model):
    """Does English intermediate-task training help zero-shot XNLI equally for dense and MoE backbones?"""
    image: str = Field("ghcr.io/stilts-dev/stilts-trainer:0.1.0", max_length=512,
                       description="Trainer image.")
    data_source: Literal["hub", "synthetic"] = Field("hub", description="hub, or synthetic: the offline "
                                                     "tiny world (demo and tests).")
    mirror: str = Field("", max_length=1024, description="Root on the volume holding hub repos in the hub "
                        "layout (models/<id>, datasets/<id>) for air-gapped clusters.")
    data_dir: str = Field("", max_length=1024, description="Directory on the volume holding datasets that come "
                          "from local files: CCGbank (ccg, multitask) as <dataDir>/ccgbank/data/AUTO/.")
    backbones: list[Backbone] = Field(..., min_length=1, max_length=8, description="Backbones to compare.")
    intermediate_tasks: list[Literal[INTERMEDIATE_TASKS]] = Field(
        list(DEFAULT_INTERMEDIATE_TASKS), max_length=16, description="English intermediate tasks (default: the "
        "paper's nine less ccg, which needs CCGbank under dataDir).")
    baseline: bool = Field(True, description="Also run each backbone with no intermediate task.")
    target: Target = Field(default_factory=Target)
    seeds: list[int] = Field([1, 2, 3], min_length=1, max_length=16, description="Seeds; one run per seed.")
    training: Training = Field(default_factory=Training)
    deepspeed: DeepSpeed = Field(default_factory=DeepSpeed)
    storage: Storage = Field(default_factory=Storage)
    max_concurrent_jobs: int = Field(8, ge=1, le=1000, description="PyTorchJobs running at once.")
    retries: Retries = Field(default_factory=Retries)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    hf_token_secret: str = Field("", max_length=253, description="Secret with key HF_TOKEN, for gated models.")


# (JSON path of the object the rule sits on, CEL with `self` = that object, message).
RULES: list[tuple[str, str, str]] = [
    ("", "self.backbones.all(b, self.backbones.exists_one(c, c.name == b.name))",
     "spec.backbones: names must be unique"),
    ("", "self.baseline || size(self.intermediateTasks) > 0",
     "spec: nothing to run; set baseline: true or list intermediateTasks"),
    ("", "!has(self.deepspeed) || !has(self.deepspeed.zeroStage) || self.deepspeed.zeroStage != 3 || "
         "self.backbones.all(b, !has(b.architecture) || b.architecture != 'moe')",
     "spec.deepspeed.zeroStage: DeepSpeed MoE does not run under ZeRO-3; use 0, 1 or 2"),
    ("", "self.dataSource != 'hub' || self.backbones.all(b, !b.model.startsWith('stilts/'))",
     "spec.backbones[].model: built-in stilts/ tiny models need dataSource: synthetic"),
    ("backbones[]", "(has(self.architecture) && self.architecture == 'moe') || !has(self.moe)",
     "moe settings are only for architecture: moe"),
    ("backbones[]", "!has(self.moe) || self.moe.experts % self.moe.expertParallelSize == 0",
     "moe.expertParallelSize must divide moe.experts"),
    ("backbones[]", "!has(self.moe) || self.moe.topK <= self.moe.experts",
     "moe.topK cannot exceed moe.experts"),
    ("backbones[]", "!has(self.architecture) || self.architecture != 'moe' || "
                    "(self.workers * (self.gpusPerWorker == 0 ? 1 : self.gpusPerWorker)) "
                    "% (has(self.moe) ? self.moe.expertParallelSize : 8) == 0",
     "moe.expertParallelSize must divide the job's world size (workers x gpusPerWorker)"),
    ("", "self.dataSource != 'hub' || self.dataDir != '' || "
         f"!self.intermediateTasks.exists(t, t in {list(LOCAL_DATA_TASKS)})",
     "spec.dataDir: ccg and multitask read CCGbank (licensed, not on a hub) from local files; set dataDir to "
     "the directory holding ccgbank/data/AUTO"),
    ("seeds", "self.all(s, self.exists_one(t, t == s))", "spec.seeds: seeds must be unique"),
    ("intermediateTasks", "self.all(s, self.exists_one(t, t == s))",
     "spec.intermediateTasks: tasks must be unique"),
]


def _where(loc: tuple) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else "." + to_camel(str(part))
    return out


@lru_cache(maxsize=None)
def _programs() -> list:
    import celpy

    env = celpy.Environment()
    return [(path, env.program(env.compile(expr)), message) for path, expr, message in RULES]


def check_rules(spec: dict) -> None:
    """Evaluate RULES (the CRD's CEL) on a spec dict as the API server would after defaulting."""
    import celpy

    for path, program, message in _programs():
        targets = [spec]
        if path == "backbones[]":
            targets = spec.get("backbones", [])
        elif path:
            targets = [spec.get(path, [])]
        for i, target in enumerate(targets):
            if not program.evaluate({"self": celpy.json_to_cel(target)}):
                prefix = f"spec.backbones[{i}]." if path == "backbones[]" else ""
                raise SpecError(prefix + message)


def parse_spec(raw: dict, source: str = "experiment") -> ExperimentSpec:
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field (check its spelling against `kubectl explain transferexperiment.spec`)"
        raise SpecError(f"{source}: {_where(first['loc'])}: {message}") from None
    try:
        check_rules(dump_spec(spec))
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None
    return spec


def dump_spec(spec: ExperimentSpec) -> dict:
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")


class Experiment(BaseModel):
    name: str
    namespace: str = "default"
    spec: ExperimentSpec


def parse_experiment(doc: dict, source: str = "experiment") -> Experiment:
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: expected a TransferExperiment object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise SpecError(f"{source}: apiVersion/kind must be {API_VERSION} / {KIND}, "
                        f"got {doc.get('apiVersion')} / {doc.get('kind')}")
    meta = doc.get("metadata") or {}
    name = meta.get("name", "")
    import re

    if not name or len(name) > 40 or not re.match(NAME_PATTERN, name):
        raise SpecError(f"{source}: metadata.name must be a DNS label of at most 40 characters "
                        f"(lowercase letters, digits, '-'), got {name!r}")
    spec = parse_spec(doc.get("spec") or {}, source)
    return Experiment(name=name, namespace=meta.get("namespace", "default"), spec=spec)


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    return parse_experiment(doc, str(path))
