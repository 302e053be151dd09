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
from pydantic import BaseModel, Field, ValidationError, field_validator
from stilts_contract import rules
from stilts_contract.job import (BackboneRef, DeepSpeed, MaskingSettings, MlmMix, Model as _Model, MoE,
                                 PhaseTraining, TaskSettings, first_error)
from stilts_contract.names import TINY_MODELS, XNLI_LANGUAGES
from stilts_contract.tasks import (DEFAULT_INTERMEDIATE_TASKS, INTERMEDIATE_TASKS, TARGET_EVAL_TASKS,
                                   TARGET_TRAIN_TASKS, local_members)

GROUP, VERSION, KIND, PLURAL, SHORT = "stilts.dev", "v1alpha1", "TransferExperiment", "transferexperiments", "tx"
API_VERSION = f"{GROUP}/{VERSION}"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SpecError(ValueError):
    """An invalid experiment; the message names the field and the fix."""


QUANTITY = r"^([0-9]+(\.[0-9]+)?(m|[KMGTPE]i?)?)?$"


class Resources(_Model):
    """What each trainer pod requests, so quotas (Kueue, ResourceQuota) see it; empty takes the default."""
    cpu: str = Field("", max_length=20, pattern=QUANTITY, description="CPU request per pod (default: 4 per "
                     "process).")
    memory: str = Field("", max_length=20, pattern=QUANTITY, description="Memory request and limit per pod "
                        "(default per process: 8Gi dense, 16Gi moe).")


class Backbone(BackboneRef):
    """One model family of the comparison, and the shape of its jobs."""
    workers: int = Field(1, ge=1, le=64, description="Pods per job (Master + Workers).")
    gpus_per_worker: int = Field(8, ge=0, le=16, description="GPUs (and trainer processes) per pod; 0 runs "
                                 "one CPU process per pod.")
    resources: Resources = Field(default_factory=Resources, description=Resources.__doc__)

    @property
    def world(self) -> int:
        return rules.world_size(self.workers, self.gpus_per_worker)


class PretrainTraining(MaskingSettings, PhaseTraining):
    """Masked-LM: building a tiny backbone offline, and the MoE upcycle phase (its steps come from
    moe.upcycleSteps)."""
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Peak learning rate (Adam).")
    batch_size: int = Field(64, ge=1, le=65536, description="Global batch size (micro x world x accumulation).")
    micro_batch_size: int = Field(8, ge=1, le=4096, description="Examples per process per forward pass.")
    epochs: float = Field(1, gt=0, le=1000, description="Passes over the corpus.")


class IntermediateTraining(TaskSettings, PhaseTraining):
    """Intermediate-task phase: 3 epochs for every task (STILTs' setting; see README)."""
    epochs: float = Field(3, gt=0, le=1000, description="Passes over the training set.")


class Training(_Model):
    """Per-phase hyperparameters."""
    pretrain: PretrainTraining = Field(default_factory=PretrainTraining, description=PretrainTraining.__doc__)
    intermediate: IntermediateTraining = Field(default_factory=IntermediateTraining,
                                               description=IntermediateTraining.__doc__)
    target: PhaseTraining = Field(default_factory=PhaseTraining, description="Target-task phase on English "
                                  "MNLI (jiant's XTREME XNLI settings).")


class Target(_Model):
    task: Literal[TARGET_EVAL_TASKS] = Field("xnli", description="Zero-shot evaluation task.")
    train_task: Literal[TARGET_TRAIN_TASKS] = Field("mnli", description="English training set of the target phase.")
    languages: list[Literal[XNLI_LANGUAGES]] = Field(list(XNLI_LANGUAGES), min_length=1, max_length=15,
                                                     description="XNLI languages to evaluate.")


class MlmMixSpec(MlmMix):
    __doc__ = MlmMix.__doc__
    languages: list[Literal[XNLI_LANGUAGES]] = Field(list(XNLI_LANGUAGES), min_length=1, max_length=15,
                                                     description="Languages of the masked-LM corpus.")


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
    preemption_limit: int = Field(20, ge=0, le=10000, description="Preemptions of one job (a SIGTERM, a drain, "
                                  "an eviction, a pod replaced in place) resumed without spending a retry; past "
                                  "it a preemption counts as a failure (reason PreemptionLimit). After the first "
                                  "of several in a row the job waits backoffSeconds, doubling, before resuming.")


class Toleration(_Model):
    key: str = Field("", max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = Field("", max_length=63)
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: int | None = None


# SIGTERM to SIGKILL for a trainer pod: the largest step checkpoint planned (an upcycled XLM-R large with
# 8 experts, ~15 GB with Adam state) at 100 MB/s, a tenth of what benchmarks/checkpoint_io.py measured on
# a local disk (1,055 MB/s), as a slow ReadWriteMany volume gives: 150 s, doubled for the step in flight
# and an evaluation it may be in.
TERMINATION_GRACE_SECONDS = 300


class Scheduling(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels trainer pods need.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32,
                                          description="Tolerations of trainer pods.")
    priority_class_name: str = Field("", max_length=253, description="PriorityClass of trainer pods.")
    queue_name: str = Field("", max_length=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                            description="Kueue LocalQueue: set as kueue.x-k8s.io/queue-name on every job, so "
                            "Kueue admits them within the queue's quota (empty: no queue).")
    termination_grace_period_seconds: int = Field(
        TERMINATION_GRACE_SECONDS, ge=10, le=86400,
        description="Seconds a preempted or drained trainer pod has, after SIGTERM, to finish its step and "
        "commit a checkpoint before SIGKILL. A spot node's own notice bounds it (GCE 30 s, AWS 120 s); "
        "checkpoints every checkpointEverySteps remain the fallback.")


# Trainer pods log to a tracking server; a file or sqlite store would be each pod's own (the local
# executor takes those from `stilts run --mlflow`).
TRACKING_URI = r"^(https?://[^\s]+|databricks(://[^\s]*)?)$"
SECRET_NAME = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$"


class MlflowTracking(_Model):
    """MLflow tracking (docs/tracking.md): one parent run per experiment, with one nested run per job
    (params, tags, step metrics; per-language accuracy of evaluate jobs) and the report. Changes no job's
    hash: turning it on reruns nothing. A server that is down never fails or slows training."""
    uri: str = Field(..., min_length=1, max_length=1024, json_schema_extra={"pattern": TRACKING_URI},
                     description="Tracking server URI as trainer pods reach it (http://mlflow.mlflow:5000).")
    experiment_name: str = Field("stilts", min_length=1, max_length=500, description="MLflow experiment holding "
                                 "the runs; several TransferExperiments may share one, each its own parent run.")
    credentials_secret: str = Field("", max_length=253, json_schema_extra={"pattern": SECRET_NAME},
                                    description="Secret in the experiment's namespace whose keys "
                                    "MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD and MLFLOW_TRACKING_TOKEN "
                                    "(each optional) reach trainer pods as environment variables (empty: none).")

    @field_validator("uri")
    @classmethod
    def _server(cls, uri: str) -> str:
        import re

        if not re.match(TRACKING_URI, uri):
            raise ValueError(f"{uri!r} is not a tracking server's URI; give its http:// or https:// URI (trainer "
                             "pods cannot share a file or sqlite store: `stilts run --mlflow [URI]` takes those "
                             "for a local run)")
        return uri

    @field_validator("credentials_secret")
    @classmethod
    def _secret(cls, name: str) -> str:
        import re

        if not re.match(SECRET_NAME, name):
            raise ValueError(f"{name!r} is not a Secret's name; give the name of a Secret in the experiment's "
                             "namespace (lowercase letters, digits, '-' and '.')")
        return name


class TrackingSpec(_Model):
    mlflow: MlflowTracking | None = Field(None, description=MlflowTracking.__doc__)


DEFAULT_SEEDS = [1, 2, 3]


class Answer(_Model):
    """Sequential seeds (docs/statistics.md, "The answer, decided"): the first wave of seeds runs, then
    after every wave the experiment looks at each dense-vs-MoE comparison and adds seeds only while some
    comparison is neither decided (its interval excludes 0, after the adjustment for all the claims and
    looks) nor as precise as asked. Seeds are numbered 1 to maxSeeds; intervals and claims are adjusted
    for the looks (error spending), so stopping early costs no validity."""
    target_half_width: float = Field(..., gt=0, le=50, description="Points: a comparison whose 95% interval "
                                     "(adjusted for the looks) is this narrow is answered even if it includes 0.")
    first_seeds: int = Field(3, ge=2, le=16, description="Seeds of the first wave (2 gives a first look with one "
                             "degree of freedom: 3 is the least that can stop early).")
    seeds_per_look: int = Field(1, ge=1, le=16, description="Seeds added after a look that leaves a comparison "
                                "open.")
    max_seeds: int = Field(10, ge=2, le=16, description="The budget: no look adds seeds past it, and the error "
                           "is spent by then.")


class ExperimentSpec(_Model):
    """Does English intermediate-task training help zero-shot XNLI equally for dense and MoE backbones?"""
    image: str = Field("", max_length=512, description="Trainer image (empty: the operator's default, the "
                       "chart's trainerImage).")
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
    mlm_mix: MlmMixSpec | None = Field(None, description=MlmMix.__doc__)
    target: Target = Field(default_factory=Target)
    seeds: list[int] | None = Field(None, min_length=1, max_length=16, description="Seeds; one run per seed "
                                    f"(default {DEFAULT_SEEDS}). Leave out with answer, which numbers them.")
    answer: Answer | None = Field(None, description=Answer.__doc__)
    training: Training = Field(default_factory=Training)
    deepspeed: DeepSpeed = Field(default_factory=DeepSpeed)
    storage: Storage = Field(default_factory=Storage)
    max_concurrent_jobs: int = Field(8, ge=1, le=1000, description="Jobs that exist at once (queued, starting or "
                                     "running); with Kueue, the quota decides how many of them run.")
    start_deadline_seconds: int = Field(1800, ge=0, le=7 * 86400, description="A job whose pods have not all "
                                        "started this long after creation (time queued by Kueue does not count) "
                                        "fails its attempt with the reason its pods wait; 0: wait for ever.")
    retries: Retries = Field(default_factory=Retries)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    hf_token_secret: str = Field("", max_length=253, description="Secret with key HF_TOKEN, for gated models.")
    tracking: TrackingSpec | None = Field(None, description="Experiment tracking; off when omitted.")


_MOE_DEFAULT = MoE()
_WORLD = "b.workers * (b.gpusPerWorker == 0 ? 1 : b.gpusPerWorker)"
_LOCAL_DATA_TASKS = [t for t in INTERMEDIATE_TASKS if local_members(t)]


def _batch_cel(phase: str) -> str:
    t = f"self.training.{phase}"
    return f"{t}.batchSize % ({t}.microBatchSize * {_WORLD}) == 0"


# The CRD's cross-field rules: (JSON path of the object the rule sits on, CEL with `self` = that object,
# message). The API server enforces them; `check_rules` evaluates the same CEL on local files. Those
# that mirror a rule of stilts_contract.rules are tested to agree with it (tests/operator/test_rules.py).
RULES: list[tuple[str, str, str]] = [
    ("", "self.backbones.all(b, self.backbones.exists_one(c, c.name == b.name))",
     "spec.backbones: names must be unique"),
    ("", "self.baseline || size(self.intermediateTasks) > 0",
     "spec: nothing to run; set baseline: true or list intermediateTasks"),
    ("", "!has(self.deepspeed) || !has(self.deepspeed.zeroStage) || self.deepspeed.zeroStage != 3 || "
         "self.backbones.all(b, !has(b.architecture) || b.architecture != 'moe')",
     "spec.deepspeed.zeroStage: DeepSpeed MoE does not run under ZeRO-3; use 0, 1 or 2"),
    ("", f"self.dataSource == 'synthetic' || self.backbones.all(b, !(b.model in {list(TINY_MODELS)}))",
     "spec.backbones[].model: built-in stilts/ tiny models need dataSource: synthetic"),
    ("backbones[]", "(has(self.architecture) && self.architecture == 'moe') || !has(self.moe)",
     "moe settings are only for architecture: moe"),
    ("backbones[]", "!has(self.moe) || self.moe.experts % self.moe.expertParallelSize == 0",
     "moe.expertParallelSize must divide moe.experts"),
    ("backbones[]", "!has(self.moe) || self.moe.topK <= self.moe.experts",
     "moe.topK cannot exceed moe.experts"),
    ("backbones[]", "!has(self.architecture) || self.architecture != 'moe' || "
                    "(self.workers * (self.gpusPerWorker == 0 ? 1 : self.gpusPerWorker)) "
                    f"% (has(self.moe) ? self.moe.expertParallelSize : {_MOE_DEFAULT.expert_parallel_size}) == 0",
     "moe.expertParallelSize must divide the job's world size (workers x gpusPerWorker)"),
    ("", "self.dataSource != 'hub' || self.dataDir != '' || "
         f"!self.intermediateTasks.exists(t, t in {_LOCAL_DATA_TASKS})",
     "spec.dataDir: ccg and multitask read CCGbank (licensed, not on a hub) from local files; set dataDir to "
     "the directory holding ccgbank/data/AUTO"),
    ("", f"self.backbones.all(b, {_batch_cel('target')})",
     "spec.training.target.batchSize must be a multiple of microBatchSize x every backbone's world size "
     "(workers x gpusPerWorker, or workers when gpusPerWorker is 0)"),
    ("", f"size(self.intermediateTasks) == 0 || self.backbones.all(b, {_batch_cel('intermediate')})",
     "spec.training.intermediate.batchSize must be a multiple of microBatchSize x every backbone's world size "
     "(workers x gpusPerWorker, or workers when gpusPerWorker is 0)"),
    ("", f"self.backbones.all(b, !(b.model in {list(TINY_MODELS)} || self.backbones.exists(m, m.model == b.model "
         "&& has(m.architecture) && m.architecture == 'moe' && has(m.moe) && m.moe.upcycleSteps > 0)) || "
         f"{_batch_cel('pretrain')})",
     "spec.training.pretrain.batchSize must be a multiple of microBatchSize x the world size of every backbone "
     "that pretrains (tiny models; an MoE with upcycleSteps, and its dense control)"),
    ("", "!has(self.mlmMix) || size(self.intermediateTasks) > 0",
     "spec.mlmMix: the ablation mixes masked-LM into intermediate training; list intermediateTasks or drop mlmMix"),
    ("seeds", "self.all(s, self.exists_one(t, t == s))", "spec.seeds: seeds must be unique"),
    ("", "!has(self.answer) || !has(self.seeds)",
     "spec.seeds: with spec.answer the seeds are numbered 1 to answer.maxSeeds and added in waves; remove seeds"),
    ("", "!has(self.answer) || self.answer.firstSeeds <= self.answer.maxSeeds",
     "spec.answer.firstSeeds cannot exceed answer.maxSeeds"),
    ("", "!has(self.answer) || (self.baseline && size(self.intermediateTasks) > 0 && "
         "self.backbones.exists(b, has(b.architecture) && b.architecture == 'moe') && "
         "self.backbones.exists(b, !has(b.architecture) || b.architecture == 'dense'))",
     "spec.answer: the sequential design answers the dense-vs-MoE question, so it needs a dense and an MoE "
     "backbone, baseline: true and at least one intermediate task; or remove answer and list seeds"),
    ("intermediateTasks", "self.all(s, self.exists_one(t, t == s))",
     "spec.intermediateTasks: tasks must be unique"),
]


def pretrains(backbone: Backbone, spec: "ExperimentSpec") -> bool:
    """Whether a pretrain job of this experiment runs with the backbone's shape: a tiny model's, an MoE's
    continued masked-LM after upcycling, and that of its dense control (same checkpoint)."""
    return backbone.model in TINY_MODELS or any(
        m.moe_settings and m.moe_settings.upcycle_steps > 0 and m.model == backbone.model for m in spec.backbones)


def check_contract_rules(spec: ExperimentSpec) -> None:
    """The contract's rules (the ones the trainer applies at start-up) on every backbone and phase."""
    checks = [("spec.deepspeed.", rules.no_zero3_with_moe(spec.deepspeed.zero_stage, b.architecture))
              for b in spec.backbones]
    for i, b in enumerate(spec.backbones):
        checks.append((f"spec.backbones[{i}].", rules.tiny_model_needs_synthetic(b.model, spec.data_source)))
        if b.moe_settings:
            checks.append((f"spec.backbones[{i}].", rules.ep_divides_world(b.moe_settings.expert_parallel_size,
                                                                             b.world)))
        phases = ["target"] + (["intermediate"] if spec.intermediate_tasks else []) + \
            (["pretrain"] if pretrains(b, spec) else [])
        for phase in phases:
            hp = getattr(spec.training, phase)
            problem = rules.batch_fits_world(hp.batch_size, hp.micro_batch_size, b.world)
            checks.append((f"spec.training.{phase}.", problem and f"{problem} (backbone {b.name})"))
    for task in spec.intermediate_tasks:
        checks.append(("spec.", rules.local_data_needs_data_dir(task, spec.data_source, spec.data_dir)))
    for prefix, problem in checks:
        if problem:
            raise SpecError(prefix + problem.removeprefix("deepspeed."))


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
        where, message = first_error(err)
        if message.startswith("unknown field"):
            message = "unknown field (check its spelling against `kubectl explain transferexperiment.spec`)"
        raise SpecError(f"{source}: spec{'.' if where and not where.startswith('[') else ''}{where}: {message}") \
            from None
    try:
        check_rules(dump_spec(spec))
        check_contract_rules(spec)
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
