"""Plan: a pure function from an experiment's spec to a DAG of trainer jobs.

A run is (backbone, intermediate task or `none`, seed); its jobs are the phases
[pretrain] -> [intermediate] -> target -> evaluate. Each job's hash covers everything that
determines its output: its own inputs plus its parent's hash. Display names (backbone name,
experiment name), launch shapes and paths are left out, so identical work is one job: two backbones
built from the same tiny model share their pretrain job, and a finished job is found again after
edits and from other experiments.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from stilts_contract import tasks
from stilts_contract.names import BASELINE as NONE, MLM_ARM, PHASES, SYNTHETIC_WORLD, TINY_MODELS, plain_task
from stilts_contract import job as contract
from stilts_contract.job import Hyperparameters, applicable

from . import answer
from .spec import Backbone, ExperimentSpec, PhaseTraining, SpecError

# Requests when the spec gives none, per trainer process (one per GPU; one per pod without GPUs).
# Memory, from benchmarks/host_memory.py and data_cache.py: one process holding XLM-R large peaks at
# 2.9 GiB on the host (2.1 of it the mapped checkpoint); training data mapped from the feature cache
# adds < 0.1 GiB at 400k pairs (encoding in the process added 1.6 GiB). With the CUDA runtime's host
# memory (not measured here; a few GiB) and the /dev/shm share, 8 GiB per process. An upcycled MoE
# holds experts/expertParallelSize expert copies per MoE layer (all 8 with ep=1: +3.2 GiB for XLM-R
# large), so it gets twice that.
DEFAULT_CPU_PER_PROCESS, SHM_GI_PER_PROCESS = 4, 1
DEFAULT_MEMORY_GI_PER_PROCESS = {"dense": 8, "moe": 16}


@dataclass(frozen=True)
class Launch:
    """How one job runs, decided at plan time from the backbone it runs for: pods, trainer processes
    and GPUs per pod, and what each pod requests (so quotas see it and a pod is never BestEffort)."""
    workers: int
    processes: int   # per pod: one per GPU, one per pod without GPUs
    gpus: int        # per pod
    cpu: str         # request per pod
    memory: str      # request and limit per pod
    shm: str         # /dev/shm per pod

    @property
    def world(self) -> int:
        return self.workers * self.processes


def launch(backbone: Backbone, phase: str) -> Launch:
    if phase == "prefetch":  # one CPU process downloads
        workers, processes, gpus = 1, 1, 0
    else:
        workers, processes = backbone.workers, max(1, backbone.gpus_per_worker)
        gpus = backbone.gpus_per_worker
    given = backbone.resources
    memory = given.memory or f"{DEFAULT_MEMORY_GI_PER_PROCESS[backbone.architecture] * processes}Gi"
    return Launch(workers, processes, gpus, given.cpu or str(DEFAULT_CPU_PER_PROCESS * processes), memory,
                  f"{SHM_GI_PER_PROCESS * processes}Gi")


@dataclass(frozen=True)
class Job:
    hash: str
    phase: str
    backbone: str               # display: the first backbone that needs this job
    intermediate_task: str      # the run's intermediate task (`none` for the baseline), "" for shared jobs
    seed: int | None
    parent: str | None          # hash of the job whose model this one starts from
    after: tuple[str, ...]      # hashes that must finish first without feeding the hash (prefetch)
    launch: Launch
    # The job as the trainer's own model validated it (paths are the executor's, placeholders here): the
    # one description of the job every reader uses. Its hash covers what of it changes results.
    job: contract.Job = field(compare=False, hash=False)

    @property
    def name(self) -> str:
        parts = [self.backbone, self.intermediate_task or None, f"s{self.seed}" if self.seed is not None else None,
                 self.phase]
        return "-".join(p for p in parts if p)

    @property
    def depends_on(self) -> tuple[str, ...]:
        return ((self.parent,) if self.parent else ()) + self.after


# Settings that came after grids had run, at the value that means "as before": left out of a job's
# hash, so upgrading stilts reruns nothing; any other value reruns the jobs that read the setting.
AS_BEFORE = {"hyperparameters": {"groupByLength": False}, "deepspeed": {"compileLayers": False}}


def _hashed(body: dict) -> dict:
    out = dict(body)
    for section, settings in AS_BEFORE.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in settings or settings[k] != v}
    return out


def content_hash(inputs: dict) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _hyper(p: PhaseTraining, phase: str, task: str = "", **override) -> dict:
    """A phase's hyperparameters as the trainer reads them: the spec's, completed with the contract's
    defaults for what the spec does not expose. Settings only some tasks or phases read are left out of
    other jobs, so changing them reruns only the jobs that read them."""
    wanted = {f.removeprefix("hyperparameters.") for f in applicable(phase, task, "dense", False)
              if f.startswith("hyperparameters.")}
    full = Hyperparameters(**{**p.model_dump(), **override}).model_dump(by_alias=True, mode="json")
    return {k: v for k, v in full.items() if k in wanted}


def _backbone_body(b: Backbone) -> dict:
    body = {"name": b.name, "model": b.model, "architecture": b.architecture}
    if b.moe_settings:
        body["moe"] = b.moe_settings.model_dump(by_alias=True, mode="json")
    return body


def _identity(backbone_body: dict) -> dict:
    """What of a backbone changes results: not its name."""
    return {k: v for k, v in backbone_body.items() if k != "name"}


class Planner:
    def __init__(self, spec: ExperimentSpec, seeds: list[int] | None = None):
        self.spec = spec
        self.seeds = seeds if seeds is not None else answer.seeds(spec)
        self.jobs: dict[str, Job] = {}
        self.hashed: dict[str, dict] = {}  # job hash -> the body it was hashed from (tests check what it covers)
        self.prefetch: str | None = None

    def add(self, phase: str, backbone: Backbone, body: dict, parent: str | None, *, run_task: str = "",
            seed: int | None = None, pretraining: str = "") -> str:
        hashed = {k: v for k, v in _hashed(body).items() if k != "backbone"}
        hashed["backbone"] = _identity(body["backbone"])
        hashed["parent"] = parent
        h = content_hash(hashed)
        if h not in self.jobs:
            after = (self.prefetch,) if self.prefetch and phase != "prefetch" else ()
            labels = {"backbone": backbone.name, "phase": phase, "intermediateTask": run_task,
                      "seed": "" if seed is None else str(seed), "pretraining": pretraining}
            body = {**body, "jobHash": h, "labels": labels}
            self.hashed[h] = body
            job = Job(h, phase, backbone.name, run_task, seed, parent, after, launch(backbone, phase),
                      validated(body, parent, f"{backbone.name} {phase}"))
            self.jobs[h] = job
        return h

    def common(self, backbone: Backbone) -> dict:
        out = {"backbone": _backbone_body(backbone), "dataSource": self.spec.data_source,
               "mirror": self.spec.mirror, "deepspeed": self.spec.deepspeed.model_dump(by_alias=True, mode="json")}
        if self.spec.data_source == "synthetic":  # the generator's version is part of the data's identity
            out["syntheticWorld"] = SYNTHETIC_WORLD
        return out

    def local_data(self, names: list[str]) -> dict:
        """dataDir, for the jobs that read local files only (other jobs' hashes stay as they were)."""
        return {"dataDir": self.spec.data_dir} if any(tasks.local_members(t) for t in names) else {}

    def plan(self) -> list[Job]:
        spec = self.spec
        if spec.data_source == "hub":
            self._plan_prefetch()
        for backbone, continued in arms(spec):
            root = self._plan_backbone_root(backbone, continued)
            pretraining = f"continued masked-LM, {continued} steps" if continued else ""
            for task in run_tasks(spec):
                for seed in self.seeds:
                    self._plan_run(backbone, root, task, seed, pretraining)
        return topological(list(self.jobs.values()))

    def _plan_prefetch(self) -> None:
        """One job fills the shared cache with every hub model and dataset. Data from local files (CCGbank)
        is not its business: only the jobs that read it wait on it, and fail naming the missing path."""
        spec = self.spec
        models = sorted({b.model for b in spec.backbones})
        wanted = tasks.expand(sorted(set(spec.intermediate_tasks) | {spec.target.train_task, spec.target.task}))
        names = sorted(t for t in wanted if not tasks.get(t).local)
        anchor = spec.backbones[0]
        body = {"phase": "prefetch", **self.common(anchor), "prefetch": {"models": models, "tasks": names}}
        self.prefetch = self.add("prefetch", anchor, body, None)

    def _plan_backbone_root(self, backbone: Backbone, continued: int = 0) -> str | None:
        """The job whose model the backbone's runs start from (None: the hub checkpoint itself): the
        tiny model's pretraining, then continued masked-LM (an MoE's upcycle steps, or its dense control's)."""
        spec = self.spec
        root = None
        if backbone.model in TINY_MODELS:
            # The tiny model is built once from scratch, as dense; MoE backbones upcycle from it.
            dense = Backbone(name=backbone.name, model=backbone.model, workers=backbone.workers,
                             gpus_per_worker=backbone.gpus_per_worker, resources=backbone.resources)
            body = {"phase": "pretrain", **self.common(dense), "seed": 0,
                    "hyperparameters": _hyper(spec.training.pretrain, "pretrain")}
            root = self.add("pretrain", dense, body, None)
        if continued:
            body = {"phase": "pretrain", **self.common(backbone), "seed": 0,
                    "hyperparameters": _hyper(spec.training.pretrain, "pretrain", max_steps=continued)}
            root = self.add("pretrain", backbone, body, root)
        return root

    def _plan_run(self, backbone: Backbone, root: str | None, task: str, seed: int, pretraining: str = "") -> None:
        spec = self.spec
        parent = root
        if task != NONE:
            name = plain_task(task)
            mix = {"mlmMix": spec.mlm_mix.model_dump(by_alias=True, mode="json")} if task.endswith(MLM_ARM) else {}
            body = {"phase": "intermediate", "task": name, **self.common(backbone), "seed": seed,
                    "hyperparameters": _hyper(spec.training.intermediate, "intermediate", name),
                    **self.local_data([name]), **mix}
            parent = self.add("intermediate", backbone, body, parent, run_task=task, seed=seed,
                              pretraining=pretraining)
        body = {"phase": "target", "task": spec.target.train_task, **self.common(backbone), "seed": seed,
                "hyperparameters": _hyper(spec.training.target, "target", spec.target.train_task)}
        parent = self.add("target", backbone, body, parent, run_task=task, seed=seed, pretraining=pretraining)
        target = spec.training.target
        body = {"phase": "evaluate", "task": spec.target.task, "languages": list(spec.target.languages),
                **self.common(backbone), "seed": seed,
                "hyperparameters": _hyper(target, "evaluate", spec.target.task)}
        self.add("evaluate", backbone, body, parent, run_task=task, seed=seed, pretraining=pretraining)


def run_tasks(spec: ExperimentSpec) -> list[str]:
    """The runs' intermediate tasks: `none` (the baseline), each task, and with the ablation each task
    mixed with multilingual masked-LM (<task>-mlm)."""
    ablation = [t + MLM_ARM for t in spec.intermediate_tasks] if spec.mlm_mix else []
    return ([NONE] if spec.baseline else []) + list(spec.intermediate_tasks) + ablation


def arms(spec: ExperimentSpec) -> list[tuple[Backbone, int]]:
    """The backbones that get runs, with their continued masked-LM steps. An MoE that continues
    pretraining after upcycling gets a dense control: the dense backbone of the same checkpoint with the
    same continued pretraining (same data, same steps), named <dense>-cp<steps>, so the comparison is
    like with like (Komatsuzaki et al. 2022 continue pretraining; doing it for one arm only would mix
    the effect of MoE with that of more multilingual masked-LM)."""
    out = []
    for backbone in spec.backbones:
        moe = backbone.moe_settings
        out.append((backbone, moe.upcycle_steps if moe else 0))
    names = {b.name for b in spec.backbones}
    for moe_backbone, steps in list(out):
        if moe_backbone.architecture != "moe" or not steps:
            continue
        for dense in spec.backbones:
            name = f"{dense.name}-cp{steps}"
            if dense.architecture == "dense" and dense.model == moe_backbone.model and name not in names:
                names.add(name)
                out.append((dense.model_copy(update={"name": name}), steps))
    return out


def plan(spec: ExperimentSpec, looks: list[dict] | None = None) -> list[Job]:
    """The jobs of the seeds planned now: spec.seeds, or with a sequential design (spec.answer) the
    waves its looks have released so far (answer.py)."""
    return Planner(spec, answer.seeds(spec, looks)).plan()


def validated(body: dict, parent: str | None, what: str) -> contract.Job:
    """The job as the trainer will read it, checked now by the trainer's own model (paths are the
    executor's, so placeholders stand in): a spec the trainer would refuse is refused at plan time."""
    try:
        return contract.parse({**body, "output": "planned", "parent": "planned-parent" if parent else None},
                              source=f"job {what}")
    except contract.JobError as err:
        raise SpecError(f"{err}; the spec plans a job the trainer refuses, so change the spec") from None


def topological(jobs: list[Job]) -> list[Job]:
    """Parents before children; ties in phase order then name, so the order is stable."""
    by_hash = {j.hash: j for j in jobs}
    depth: dict[str, int] = {}

    def level(h: str) -> int:
        if h not in depth:
            deps = by_hash[h].depends_on
            depth[h] = 1 + max((level(d) for d in deps), default=-1)
        return depth[h]

    return sorted(jobs, key=lambda j: (level(j.hash), PHASES.index(j.phase), j.name, j.hash))


def job_json(job: Job, output: str, parent_dir: str | None, *, experiment: str, metrics_port: int = 0,
             checkpoint_every_steps: int = 500, cache_dir: str = "", tracking: dict | None = None) -> dict:
    """The trainer's job.json for one planned job, once the executor knows the paths. Like them, tracking
    (contract.Tracking's fields) is added after hashing: turning it on reruns nothing."""
    return contract.dump(job.job.model_copy(update={
        "experiment": experiment, "output": output, "parent": parent_dir, "metrics_port": metrics_port,
        "checkpoint_every_steps": checkpoint_every_steps, "cache_dir": cache_dir,
        "tracking": contract.Tracking.model_validate(tracking) if tracking else None}))

