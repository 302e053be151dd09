"""Cross-field rules, each written once as a plain function.

A rule returns None when it holds, else one line naming the field and the fix; callers prefix the
path of the object it applies to. The trainer applies them to job.json and at start-up (world size),
the planner to every job it plans (so `stilts plan` and the operator refuse what a pod would refuse
later), and the spec models through their validators. The API server checks the CRD's CEL versions
of the same rules (operator/stilts/spec.py), which a test keeps in agreement with these.
"""

from __future__ import annotations

from . import tasks
from .names import TINY_MODELS


def moe_settings_need_moe(architecture: str, has_moe: bool) -> str | None:
    if has_moe and architecture != "moe":
        return "moe settings are only for architecture: moe (set architecture: moe or drop moe)"
    return None


def ep_divides_experts(experts: int, ep: int) -> str | None:
    if experts % ep:
        return f"moe.expertParallelSize ({ep}) must divide moe.experts ({experts})"
    return None


def top_k_fits(top_k: int, experts: int) -> str | None:
    if top_k > experts:
        return f"moe.topK ({top_k}) cannot exceed moe.experts ({experts})"
    return None


def ep_divides_world(ep: int, world: int) -> str | None:
    if world % ep:
        return (f"moe.expertParallelSize ({ep}) must divide the job's world size ({world} processes); "
                "change workers x gpusPerWorker or expertParallelSize")
    return None


def no_zero3_with_moe(zero_stage: int, architecture: str) -> str | None:
    if zero_stage == 3 and architecture == "moe":
        return "deepspeed.zeroStage: DeepSpeed MoE does not run under ZeRO-3; use 0, 1 or 2"
    return None


def batch_fits_world(batch: int, micro: int, world: int) -> str | None:
    per_step = micro * world
    if batch % per_step:
        return (f"batchSize ({batch}) must be a multiple of microBatchSize x world size ({micro} x {world} = "
                f"{per_step}); change batchSize, microBatchSize or the job's world size")
    return None


def local_data_needs_data_dir(task: str, data_source: str, data_dir: str) -> str | None:
    local = tasks.local_members(task)
    if local and data_source == "hub" and not data_dir:
        layout = tasks.get(local[0]).local
        return (f"dataDir: task {task} reads {local[0]} from local files (<dataDir>/{layout.directory}: "
                f"{layout.layout}); set dataDir")
    return None


def tiny_model_needs_synthetic(model: str, data_source: str) -> str | None:
    if model in TINY_MODELS and data_source != "synthetic":
        return f"model: the built-in {model} needs dataSource: synthetic"
    return None


def world_size(workers: int, gpus_per_worker: int) -> int:
    """Processes of one job: one per GPU, or one per pod when the pods have no GPU."""
    return workers * max(1, gpus_per_worker)
