"""The DeepSpeed training loop shared by every training phase.

One loop: seeded data order sharded by rank, gradient accumulation, warmup + linear decay,
clipping, evaluation on an English dev subset every N steps with early stopping, the best model
written as the phase's output, and step checkpoints that a restarted job resumes from exactly
(optimizer, scheduler, RNG and data position), committed by our own marker.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from stilts_contract.names import PROGRESS

from . import data, moe, safe_load, sampling
from .preemption import Preempted, Watch, installed
from .checkpoint import COMMITTED, committed_checkpoints, fsync_path, fsync_tree, replace_dir, write_atomic
from .job import Job
from .model import compile_layers

log = logging.getLogger("stilts_trainer")
LOG_EVERY_STEPS = 50
LOSS_POINTS = 20  # windows of the training-loss curve kept in metrics.json
PROGRESS_EVERY_STEPS = 10


@dataclass
class Context:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    # SIGTERM: finish the step, commit a checkpoint (preemption.py); a bare Context's never fires
    watch: Watch = field(default_factory=lambda: Watch(install=False))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> Context:
    """Join the process group torchrun (or a PyTorchJob) set up; alone, make a group of one."""
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, device, _watch(device))


def _watch(device: torch.device) -> Watch:
    """The process's SIGTERM watch, installed once (in the main thread, where Python handles signals):
    `python -m stilts_trainer` installs it before anything else, so that a SIGTERM during the imports is
    a preemption too. Its flag travels over gloo: on CUDA a side group of every rank, so the check never
    touches the GPU."""
    watch = installed()
    if watch is None:
        # Python handles signals in the main thread only: elsewhere (a benchmark's thread) the watch never fires.
        watch = Watch(install=threading.current_thread() is threading.main_thread())
    if watch.group is None and device.type == "cuda" and dist.get_world_size() > 1:
        watch.group = dist.new_group(backend="gloo")  # collective: every rank gets here once
    return watch


def mixed_precision(job: Job, device: torch.device, world: int) -> tuple[bool, bool]:
    """(bf16, fp16) as DeepSpeed's own mixed precision: on CUDA only (CPU runs fp32), and bf16 only with
    several processes. One bf16 process trains under autocast instead (`autocast_dtype`): for it DeepSpeed
    builds FP16_UnfusedOptimizer, which checks every parameter for overflow on the host (a device read
    per parameter, ~390 per step for XLM-R large), copies each parameter on its own and all-reduces the
    gradients with itself."""
    cuda = device.type == "cuda"
    return (job.deepspeed.precision == "bf16" and cuda and world > 1, job.deepspeed.precision == "fp16" and cuda)


def autocast_dtype(job: Job, device: torch.device, world: int) -> torch.dtype | None:
    """One bf16 CUDA process: plain mixed precision. fp32 master weights and gradients (accumulated in
    fp32), matrix products in bf16 under autocast, one fused AdamW, torch's foreach clipping."""
    if job.deepspeed.precision == "bf16" and device.type == "cuda" and world == 1:
        return torch.bfloat16
    return None


def zero_stage(job: Job, world: int) -> int:
    """ZeRO partitions optimizer state and gradients over data-parallel ranks: one process has nothing to
    partition, and stages 1-2 would only add copies to every step (0.85x a plain loop's speed on CPU)."""
    return job.deepspeed.zero_stage if world > 1 else 0


def plain_loop(job: Job, world: int, device: torch.device) -> bool:
    """One process in fp32 or under autocast: nothing to reduce or partition, so the loop skips
    DeepSpeed's gradient all-reduce and clips with torch's multi-tensor kernel itself."""
    return world == 1 and not any(mixed_precision(job, device, world))


def deepspeed_config(job: Job, sched: data.Schedule, total_steps: int, device: torch.device, world: int,
                     stage: int) -> dict:
    hp = job.hyperparameters
    bf16, fp16 = mixed_precision(job, device, world)
    return {
        "train_batch_size": hp.batch_size,
        "train_micro_batch_size_per_gpu": hp.micro_batch_size,
        "gradient_accumulation_steps": sched.accumulation,
        "gradient_clipping": 0.0 if plain_loop(job, world, device) else hp.max_grad_norm,
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "total_num_steps": max(total_steps, 1), "warmup_min_lr": 0.0, "warmup_max_lr": hp.learning_rate,
            "warmup_num_steps": max(1, round(hp.warmup_ratio * total_steps)), "warmup_type": "linear"}},
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": fp16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # On by default, DeepSpeed's throughput timer synchronizes the device at every forward and every
        # step (tests/trainer/sync_checks.py counts them); stilts measures tokens/s itself.
        "timers": {"throughput": {"enabled": False}},
    }


def optimizer(groups: list[dict], hp) -> torch.optim.Optimizer:
    """AdamW, fused: one kernel updates every parameter of a group (on CPU and CUDA). DeepSpeed's
    config-built torch AdamW would loop over parameters one by one on CPU; ZeRO and DeepSpeed MoE wrap
    this optimizer as they would their own (torch.optim.AdamW is one of ZeRO's supported optimizers).
    Weight decay comes per group (parameter_groups: none on biases and LayerNorm)."""
    return torch.optim.AdamW(groups, lr=hp.learning_rate, eps=hp.adam_epsilon, weight_decay=hp.weight_decay,
                             fused=True)


@dataclass
class LoopState:
    step: int = 0
    best: float | None = None
    best_step: int = 0
    evals_without_gain: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)
    loss_curve: dict = field(default_factory=dict)  # task -> mean training loss per window of steps
    padding_share: float = 0.0  # of this rank's training batch positions, this run (groupByLength lowers it)


Evaluator = Callable[[torch.nn.Module], float]


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights, not on biases or LayerNorm (BERT's and jiant's rule)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def needs_common_shape(module: torch.nn.Module) -> bool:
    """Expert parallelism exchanges capacity-sized buffers computed from each rank's token count:
    every rank of an expert-parallel group must then see batches of the same shape."""
    return any(layer.moe.ep_size > 1 for layer in moe.moe_layers(module))


def common_shape(batch: dict, pad_id: int, ctx: Context) -> dict:
    shape = torch.tensor(batch["input_ids"].shape, device=ctx.device)
    dist.all_reduce(shape, op=dist.ReduceOp.MAX)
    return data.pad_batch(batch, tuple(shape.tolist()), pad_id)


def predict(module: torch.nn.Module, fmt, features: list[dict], batch_size: int, pad_id: int, ctx: Context,
            task: str | None = None, autocast: torch.dtype | None = None) -> list:
    """The format's prediction for every feature, computed on all ranks (length-sorted batches,
    dynamic padding) and gathered everywhere. The phases evaluate in fp32: on an H200, bf16 `autocast`
    was 0.73x as fast at XNLI's lengths (benchmarks/gpu.py, README); the option stays for that comparison."""
    mine = data.eval_batches(data.padded_lengths(features), batch_size, ctx.rank, ctx.world)
    predictions: dict[int, object] = {}
    watch = ctx.watch
    uniform = needs_common_shape(module)
    was_training = module.training
    module.eval()
    with torch.no_grad(), torch.autocast(ctx.device.type, dtype=autocast or torch.bfloat16,
                                         enabled=autocast is not None):
        for indices in mine:
            watch.check()  # a safe point: a SIGTERM whose raise was lost stops evaluation here
            # An empty batch still runs a forward pass: ranks stay in step (expert parallelism).
            batch = fmt.collate([features[i] for i in indices] if indices else [features[0]], pad_id)
            if uniform:
                batch = common_shape(batch, pad_id, ctx)
            padded = bool((batch["attention_mask"] == 0).any())  # on the host, before the copy
            logits = module(input_ids=batch["input_ids"].to(ctx.device),
                            attention_mask=batch["attention_mask"].to(ctx.device), task=task, padded=padded)["logits"]
            for i, p in zip(indices, fmt.predict(logits.float().cpu(), batch)):
                predictions[i] = p
    module.train(was_training)
    gathered = [None] * ctx.world
    dist.all_gather_object(gathered, predictions)
    merged = {k: v for part in gathered for k, v in part.items()}
    return [merged[i] for i in range(len(features))]


def _initialize(job: Job, ctx: Context, model: torch.nn.Module, sched: data.Schedule, total: int):
    """DeepSpeed around `model`; returns the engine and the parameters it trains."""
    import deepspeed

    hp = job.hyperparameters
    if job.deepspeed.compile_layers:
        log.info("compiling %d encoder modules with torch.compile (deepspeed.compileLayers)", compile_layers(model))
    groups = parameter_groups(model, hp.weight_decay)
    if moe.moe_layers(model):  # expert and non-expert parameters reduce over different groups
        from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer
        groups = split_params_into_different_moe_groups_for_optimizer(groups)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer(groups, hp),
                                      config=deepspeed_config(job, sched, total, ctx.device, ctx.world,
                                                              zero_stage(job, ctx.world)))
    engine.checkpoint_engine = safe_load.SafeCheckpointEngine(engine._config)
    if plain_loop(job, ctx.world, ctx.device):  # DeepSpeed would flatten and all-reduce every gradient with itself
        engine.enable_backward_allreduce = False
    return engine, [p for g in groups for p in g["params"]]


@dataclass
class _Selection:
    """Evaluation on the dev subset, the best model kept, and early stopping."""
    evaluator: Evaluator
    save_best: Callable[[torch.nn.Module], None]
    patience: int
    metrics: object = None

    def __call__(self, module: torch.nn.Module, state: LoopState) -> None:
        score = self.evaluator(module)
        state.history.append({"step": state.step, "score": score})
        if state.best is None or score > state.best:
            state.best, state.best_step, state.evals_without_gain = score, state.step, 0
            self.save_best(module)
        else:
            state.evals_without_gain += 1
        if self.metrics:
            self.metrics.dev_score(score)
        log.info("step %d: dev %.4f (best %.4f at %d)", state.step, score, state.best, state.best_step)
        if state.evals_without_gain >= self.patience:
            state.stopped_early = True


@dataclass
class _Throughput:
    """Tokens the loop trained on, for tokens/s, the ETA and the padding share."""
    first_step: int
    tokens: int = 0
    positions: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, attention_mask: torch.Tensor) -> bool:
        """Counts a host batch; True when it holds padding."""
        real = int(attention_mask.sum())  # on the host: the batch is not on the device yet
        self.tokens, self.positions = self.tokens + real, self.positions + attention_mask.numel()
        return real < attention_mask.numel()

    def eta(self, step: int, total: int) -> float | None:
        done = step - self.first_step
        return (time.perf_counter() - self.started) / done * (total - step) if done else None

    def tokens_per_second(self, world: int) -> float:
        return self.tokens * world / max(time.perf_counter() - self.started, 1e-9)


def _report(job: Job, ctx: Context, engine, state: LoopState, total: int, out: dict,
            last_loss: dict[str, torch.Tensor], speed: _Throughput, metrics) -> None:
    """Progress for the executor, the log and the metrics; the only place the loop reads a loss."""
    logged = state.step % LOG_EVERY_STEPS == 0
    if not ctx.is_main or not (logged or state.step % PROGRESS_EVERY_STEPS == 0 or state.step in (1, total)):
        return
    loss_value = out["loss"].item()
    eta = speed.eta(state.step, total)
    if logged or state.step == 1:
        log.info("step %d/%d loss %.4f lr %.2e", state.step, total, loss_value, engine.get_lr()[0])
    if metrics:
        metrics.step(state.step, loss_value, engine.get_lr()[0], speed.tokens_per_second(ctx.world), total, eta)
        for name, value in last_loss.items():
            metrics.head(name, value.item())
        if "aux_loss" in out:
            metrics.moe(out["aux_loss"].item(), moe.load_stats(engine.module))
    write_progress(Path(job.output), job.phase, state.step, total, eta)


def train(job: Job, ctx: Context, model: torch.nn.Module, training: sampling.TrainingSet, pad_id: int,
          save_best: Callable[[torch.nn.Module], None], evaluator: Evaluator | None = None,
          metrics=None) -> LoopState:
    """Train `model` on `training`; returns the loop's final state. With an evaluator, the best
    model by its score is saved (early stopping); without one (MLM), the last."""
    hp = job.hyperparameters
    sched = data.schedule(training.epoch_size, hp.batch_size, hp.micro_batch_size, ctx.world)
    total = hp.max_steps or math.ceil(hp.epochs * sched.steps_per_epoch)
    stream = sampling.Stream(training, sched, job.seed, total * sched.accumulation, hp.group_by_length)
    window = max(1, total // LOSS_POINTS)
    torch.manual_seed(job.seed * 1000 + ctx.rank)
    engine, trained = _initialize(job, ctx, model, sched, total)
    plain, amp = plain_loop(job, ctx.world, ctx.device), autocast_dtype(job, ctx.device, ctx.world)
    ckpt_root = Path(job.output) / "checkpoints"
    generator = torch.Generator().manual_seed(job.seed * 7919 + ctx.rank)
    watch = ctx.watch
    watch.check()
    state = _resume(engine, ckpt_root, ctx, generator)
    if state is not None:
        log.info("resumed at step %d of %d", state.step, total)
    state = state or LoopState()
    if metrics:
        metrics.start(state.step)
    select = _Selection(evaluator, save_best, hp.early_stopping_patience, metrics) if evaluator else None

    engine.train()
    uniform = needs_common_shape(model)
    micro = state.step * sched.accumulation
    speed = _Throughput(first_step=state.step)
    # Losses stay on the device until a report needs them: reading one (.item()) waits for the GPU,
    # and doing that every step keeps the host from queueing the next step's kernels.
    window_losses: dict[str, list[torch.Tensor]] = {}
    last_loss: dict[str, torch.Tensor] = {}
    watch.armed = True  # from here SIGTERM waits for the end of the step
    while state.step < total and not state.stopped_early:
        task, indices = stream.at(micro, ctx.rank)
        batch = training.collate[task]([training.features[task][i] for i in indices], pad_id)
        if task in training.transforms:
            batch = training.transforms[task](batch, generator)
        if uniform:
            batch = common_shape(batch, pad_id, ctx)
        padded = speed.add(batch["attention_mask"])
        batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(ctx.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            out = engine(**batch, task=task, padded=padded)
        engine.backward(out["loss"])
        if plain and engine.is_gradient_accumulation_boundary():
            torch.nn.utils.clip_grad_norm_(trained, hp.max_grad_norm, foreach=True)
        engine.step()
        micro += 1
        last_loss[task] = out.get("task_loss", out["loss"]).detach()
        window_losses.setdefault(task, []).append(last_loss[task])
        if micro % sched.accumulation:
            continue
        state.step += 1
        if state.step % window == 0:
            for name, values in window_losses.items():
                state.loss_curve.setdefault(name, []).append(round(torch.stack(values).double().mean().item(), 5))
            window_losses.clear()
        _report(job, ctx, engine, state, total, out, last_loss, speed, metrics)
        if select and state.step % hp.eval_every_steps == 0:
            select(engine.module, state)
        _checkpoint_or_stop(engine, ckpt_root, state, total, job.checkpoint_every_steps, ctx, generator, metrics)
    watch.armed = False  # no step to finish from here: SIGTERM stops the phase at once
    watch.check()  # and one that came after the last step's agreement stops it now
    if speed.positions:
        state.padding_share = round(1 - speed.tokens / speed.positions, 4)
        if ctx.is_main:
            log.info("training batches were %.1f%% padding (groupByLength: %s)", 100 * state.padding_share,
                     str(hp.group_by_length).lower())
    if select is None:
        save_best(engine.module)
    elif not state.history or state.history[-1]["step"] != state.step:
        select(engine.module, state)  # the end of training always counts as a candidate
    dist.barrier()
    return state


def _checkpoint_or_stop(engine, root: Path, state: LoopState, total: int, every: int, ctx: Context,
                        generator: torch.Generator, metrics) -> None:
    """The step checkpoint when one is due, and the preemption check. Every step, the last one too: a
    SIGTERM during the last step commits it rather than being lost in the work after the loop (a
    checkpoint at the last step resumes straight to that work)."""
    saved = state.step % every == 0 and state.step < total
    if saved:
        _save_checkpoint(engine, root, state, ctx, generator)
    if ctx.watch.agreed(ctx.world):
        if not saved:
            _save_checkpoint(engine, root, state, ctx, generator)
        log.warning("preempted: checkpoint of step %d committed; the next attempt resumes there", state.step)
        if metrics:
            metrics.flush()
        raise Preempted(state.step)


def write_progress(output: Path, phase: str, step: int, total: int, eta: float | None) -> None:
    """Where the phase is, for whoever shows it (the local executor reads it; writing it is cheap)."""
    import json

    tmp = output / f".{PROGRESS}.tmp"
    tmp.write_text(json.dumps({"phase": phase, "step": step, "total": total,
                               "eta": None if eta is None else round(eta, 1), "time": time.time()}))
    os.replace(tmp, output / PROGRESS)


def _rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng-rank{rank}.pt"


def _save_checkpoint(engine, root: Path, state: LoopState, ctx: Context, generator: torch.Generator) -> None:
    tag = f"step-{state.step}"
    engine.save_checkpoint(str(root), tag=tag, client_state={"loop": state.__dict__})
    torch.save({"torch": torch.get_rng_state(), "generator": generator.get_state(),
                "cuda": torch.cuda.get_rng_state() if ctx.device.type == "cuda" else None},
               _rng_file(root / tag, ctx.rank))
    fsync_tree(root / tag)  # each rank flushes what it wrote (and, harmlessly, what others did)
    dist.barrier()  # every rank's shards and RNG are on disk before the commit
    if ctx.is_main:
        write_atomic(root / tag / COMMITTED, f"{state.step}\n")
        for old in committed_checkpoints(root)[:-2]:  # keep two: the newest may prove unreadable
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


LOADED, UNREADABLE, UNSAFE = 0, 1, 2


def _agree(outcome: int, ctx: Context) -> int:
    """The worst outcome over all ranks: every rank resumes from the same checkpoint (with expert
    parallelism, ranks read different files, and a shard torn on one rank must send all back)."""
    worst = torch.tensor([outcome], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return int(worst.item())


def _resume(engine, root: Path, ctx: Context, generator: torch.Generator) -> LoopState | None:
    """Load the newest committed checkpoint that every rank can load; never silently start over when
    some exist, and never load one that names code to run."""
    candidates = committed_checkpoints(root)
    errors = []
    for ckpt in reversed(candidates):
        outcome, problem = LOADED, ""
        try:
            path, client = safe_load.load_checkpoint(engine, root, ckpt.name)
            if path is None or client is None:
                raise RuntimeError("DeepSpeed found no loadable state")
            rng = safe_load.load(_rng_file(ckpt, ctx.rank))
        except safe_load.UnsafeCheckpoint as err:
            outcome, problem = UNSAFE, str(err)
        except Exception as err:  # a torn or truncated shard: fall back to the previous commit. (A SIGTERM
            # here is Preempted, a BaseException: it passes, and the checkpoint stays the one to resume from.)
            outcome, problem = UNREADABLE, str(err)
        agreed = _agree(outcome, ctx)
        if agreed == UNSAFE:
            raise safe_load.UnsafeCheckpoint(problem or f"checkpoint {ckpt.name}: another rank found a file "
                                             "that names code to run; refusing to resume from it")
        if agreed == UNREADABLE:
            errors.append(f"{ckpt.name}: {problem or 'unreadable on another rank'}")
            log.warning("checkpoint %s unreadable (%s); all ranks try an older one", ckpt.name,
                        problem or "on another rank")
            continue
        torch.set_rng_state(rng["torch"])
        generator.set_state(rng["generator"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"])
        return LoopState(**client["loop"])
    if candidates:
        raise RuntimeError("no committed checkpoint could be loaded, refusing to restart from step 0: "
                           + "; ".join(errors))
    return None


def save_collective(ctx: Context, directory: Path, write: Callable[[Path], None]) -> None:
    """Every rank writes its part into a directory beside the destination (MoE experts live on
    several ranks); once all are done, rank 0 swaps it in whole."""
    ctx.watch.check()  # a safe point (outside the loop; inside it the flag waits for the step's end)
    tmp = directory.with_name(directory.name + ".tmp")
    if ctx.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    dist.barrier()
    write(tmp)
    fsync_tree(tmp)  # on disk before it is swapped in (and before COMPLETE can point at it)
    dist.barrier()
    if ctx.is_main:
        replace_dir(tmp, directory)
        fsync_path(str(directory.parent))  # the rename itself
    dist.barrier()
