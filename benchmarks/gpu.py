"""The GPU benchmark: what one card gives stilts' own training loop at paper scale, in one command,
in seven to nine minutes (estimated; --budget-s caps it), with no hub access (XLM-R large's
configuration with random weights).

    python benchmarks/gpu.py [--out DIR]      # on a machine with a CUDA GPU
    python benchmarks/gpu.py --smoke          # the same code paths on CPU with a tiny model (a check, no figures)
    python benchmarks/gpu.py --only V3,MoE    # the rows whose names contain one of these

Each section runs in its own process (its peak memory is its own; a failure does not stop the rest),
and prints its result as one JSON line as soon as it ends, so a run cut short keeps what it measured:

- ceiling: a bf16 8192^3 matrix product, the card's measured roof beside its datasheet figure;
- train:   fine-tuning steps of XLM-R large through `engine.train` (the loop every phase uses), one
           row per TRAIN_CONFIGS entry: the ladder from the path that ran at 10.9% MFU (V0) through
           timers off (V1), DeepSpeed's bf16 under ZeRO-2 against plain mixed precision (V2), compiled
           layers (V3) and micro-batch 128 x 2 (V4); MoE (stilts' default arm: top-2, 8 experts in every
           second layer, expert parallelism 1 on one card) before and after; the paper's batch 32;
- eval:    (--eval) XNLI-shaped evaluation through `engine.predict`, fp32 against bf16 autocast.

Each training row gives the median of the timed steps' wall times (CUDA events at every optimizer
step, no host sync added), tokens/s, model TFLOP/s, MFU, the share of the measured matmul roof, host
reads of device tensors per step, and from a profiled stretch after the timed one, kernel launches per
step and the share of wall time the GPU was busy. Model FLOPs utilisation counts the matrix products a
token needs (6 x the active matrix parameters per token, plus attention's 12 x layers x length x
width), over the card's dense bf16 datasheet peak; a top-2 MoE token runs two experts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "contract", ROOT / "trainer"):
    sys.path.insert(0, str(path))

# XLM-R large (Conneau et al. 2020), as in its hub config.
XLMR_LARGE = dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2)
SMOKE = dict(XLMR_LARGE, vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
             intermediate_size=256)
# Dense bf16 tensor-core peak from the vendor's datasheets (without sparsity).
DATASHEET_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12}
MOE = {"experts": 8, "topK": 2, "everyNLayers": 2, "expertParallelSize": 1}
SEQ = 128  # the paper's (jiant's) XNLI fine-tuning length


@dataclass(frozen=True)
class Variant:
    """One training configuration. `path` is how a single bf16 process trains:
    - "autocast":  the trainer's (engine.autocast_dtype): fp32 master weights, bf16 autocast, fused AdamW,
                   foreach clipping;
    - "ds-bf16":   DeepSpeed's own bf16 (FP16_UnfusedOptimizer: an overflow read per parameter), the path
                   autocast replaced; `timers` puts back DeepSpeed's default throughput timer (a device
                   synchronize at every forward and step), which the trainer turns off;
    - "ds-zero2":  DeepSpeed's bf16 under ZeRO-2 as the spec names it (the trainer runs stage 0 alone).
    `compiled` is deepspeed.compileLayers (torch.compile per encoder layer)."""
    micro: int
    batch: int
    path: str = "autocast"
    moe: dict | None = None
    timers: bool = False
    compiled: bool = False


# The ladder (V0 = what ran at 10.9% MFU; each later row changes one thing), then MoE before and
# after, and the paper's own batch on the trainer's path.
TRAIN_CONFIGS = {
    "V0 dense 64x4, DeepSpeed bf16, timers on (before)": Variant(64, 256, "ds-bf16", timers=True),
    "V1 dense 64x4, DeepSpeed bf16, timers off": Variant(64, 256, "ds-bf16"),
    "V2 dense 64x4, DeepSpeed bf16, ZeRO-2": Variant(64, 256, "ds-zero2"),
    "V2 dense 64x4, plain mixed precision (trainer)": Variant(64, 256),
    "V3 dense 64x4, mixed precision, compiled layers": Variant(64, 256, compiled=True),
    "V4 dense 128x2, mixed precision": Variant(128, 256),
    "dense paper batch 32, mixed precision": Variant(32, 32),
    "MoE V0 64x4, DeepSpeed bf16, timers on (before)": Variant(64, 256, "ds-bf16", MOE, timers=True),
    "MoE 64x4, mixed precision (trainer)": Variant(64, 256, moe=MOE),
    "MoE 64x4, mixed precision, compiled layers": Variant(64, 256, moe=MOE, compiled=True),
}
# Run order: the before/after pairs first, compilation (the slowest to start) late, so a run cut short by
# --budget-s or a device window still answers the main question.
RUN_ORDER = ("V0 dense", "V2 dense 64x4, plain", "MoE V0", "MoE 64x4, mixed precision (trainer)", "V1", "V2 dense 64x4, "
             "DeepSpeed", "V4", "V3", "MoE 64x4, mixed precision, compiled", "dense paper")
WARMUP_STEPS = 3  # allocation, kernel selection, compilation: left out
TIMED_STEPS = 6   # every one timed on the device's own clock
PROFILED_STEPS = 2  # then under the profiler, for launches and busy time (its overhead kept out of the timing)


def datasheet_peak(name: str) -> float | None:
    return next((v for k, v in DATASHEET_BF16.items() if k in name), None)


def train_flops_per_token(cfg: dict, seq: int, moe: dict | None) -> float:
    """6 x active matrix parameters + attention (QK^T and AV: 4 x seq x width per layer forward, x3 to train)."""
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    per_layer = []
    for index in range(layers):
        ffn = 2 * h * i
        if moe and index % moe["everyNLayers"] == moe["everyNLayers"] - 1:
            ffn = moe["topK"] * ffn + h * moe["experts"]
        per_layer.append(4 * h * h + ffn)
    return 6 * sum(per_layer) + 12 * layers * seq * h


class StepClock:
    """Marks the end of every optimizer step: on CUDA an event on the device's own timeline (no host
    sync, so the host runs ahead as it does in training), read once at the end. DeepSpeed's engine
    counts optimizer steps (global_steps) whichever path runs, so the mark goes where that count moves.
    After the timed steps it profiles a few more, with a sync at either end, for kernel launches and the
    share of wall time the GPU was busy."""

    def __init__(self, cuda: bool):
        import torch
        from deepspeed.runtime.engine import DeepSpeedEngine

        self.cuda, self.marks, self.profiled = cuda, [], {}
        self._profiler = self._t0 = None
        original = DeepSpeedEngine.step

        def step(engine, *args, **kwargs):
            before = engine.global_steps
            out = original(engine, *args, **kwargs)
            if engine.global_steps != before:
                self.mark()
            return out

        DeepSpeedEngine.step = step
        self._torch = torch

    @property
    def steps(self) -> int:
        return len(self.marks)

    def mark(self) -> None:
        torch = self._torch
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())
        first_profiled = WARMUP_STEPS + TIMED_STEPS
        if self.steps == first_profiled:
            self._start_profile()
        elif self.steps == first_profiled + PROFILED_STEPS and self._profiler:
            self._stop_profile()

    def _sync(self) -> None:
        if self.cuda:
            self._torch.cuda.synchronize()

    def _start_profile(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        # Device activity only on a GPU: tracing host ops too would slow the host and so the busy share.
        self._profiler = profile(activities=[ProfilerActivity.CUDA if self.cuda else ProfilerActivity.CPU])
        self._profiler.start()
        self._sync()
        self._t0 = time.perf_counter()

    def _stop_profile(self) -> None:
        from torch.autograd import DeviceType

        self._sync()
        wall_us = (time.perf_counter() - self._t0) * 1e6
        self._profiler.stop()
        device = sorted((e.time_range.start, e.time_range.end) for e in self._profiler.events()
                        if e.device_type == DeviceType.CUDA)
        busy, reach = 0.0, float("-inf")  # the union of kernel intervals: overlapping streams count once
        for begin, end in device:
            if end > reach:
                busy += end - max(begin, reach)
                reach = end
        self.profiled = {"launches_per_step": len(device) / PROFILED_STEPS if self.cuda else None,
                         "gpu_busy": min(1.0, busy / wall_us) if self.cuda else None}

    def step_ms(self) -> list[float]:
        """Wall time of each timed step (after the warm-up, before the profiled ones)."""
        span = self.marks[WARMUP_STEPS - 1:WARMUP_STEPS + TIMED_STEPS]
        if self.cuda:
            span[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(span, span[1:])]
        return [(b - a) * 1e3 for a, b in zip(span, span[1:])]


def make_checkpoint(args) -> dict:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    cfg = SMOKE if args.smoke else XLMR_LARGE
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        mlm = XLMRobertaForMaskedLM(XLMRobertaConfig(**cfg))
    mlm.save_pretrained(args.checkpoint)
    return {"parameters": sum(p.numel() for p in mlm.parameters()),
            "attention": mlm.config._attn_implementation}


def count_device_reads(clock: StepClock) -> dict:
    """Host reads of device tensors (item, bool, int, tolist) and synchronize() calls during the timed
    steps: each one stalls the host until the GPU catches up (tests/trainer/sync_checks.py counts the
    same on CPU)."""
    import torch

    counted = {"count": 0}

    def counting(original, is_sync=False):
        def wrapper(*args, **kwargs):
            tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if WARMUP_STEPS <= clock.steps < WARMUP_STEPS + TIMED_STEPS and (
                    is_sync or (tensor is not None and tensor.device.type != "cpu")):
                counted["count"] += 1
            return original(*args, **kwargs)
        return wrapper

    for name in ("item", "__bool__", "__int__", "tolist"):
        setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    if torch.cuda.is_available():
        torch.cuda.synchronize = counting(torch.cuda.synchronize, is_sync=True)
    return counted


def _use_path(engine, variant: Variant) -> None:
    """Put a replaced path back, for the comparison only."""
    if variant.path == "autocast":
        return
    default_config = engine.deepspeed_config
    engine.autocast_dtype = lambda job, device, world: None
    engine.mixed_precision = lambda job, device, world: (device.type == "cuda", False)
    engine.plain_loop = lambda job, world, device: False  # DeepSpeed clips and reduces (on CPU too)
    if variant.path == "ds-zero2":
        engine.zero_stage = lambda job, world: 2
    if variant.timers:
        engine.deepspeed_config = lambda *a: {**default_config(*a), "timers": {"throughput": {"enabled": True}}}


def train_section(args) -> dict:
    import torch

    from stilts_trainer import engine, formats, tasks
    from stilts_trainer import model as models
    from stilts_trainer.job import parse
    from stilts_trainer.sampling import TrainingSet

    variant = TRAIN_CONFIGS[args.config]
    _use_path(engine, variant)
    micro, batch = variant.micro, variant.batch
    if args.smoke:
        micro, batch = max(1, micro // 16), max(1, batch // 16)
    steps = WARMUP_STEPS + TIMED_STEPS + PROFILED_STEPS
    backbone = {"name": "xlmr-large", "model": args.checkpoint}
    if variant.moe:
        backbone.update(architecture="moe", moe=dict(variant.moe))
    ctx = engine.init_distributed()
    cuda = ctx.device.type == "cuda"
    job = parse({"phase": "target", "task": "mnli", "backbone": backbone, "output": args.work,
                 "hyperparameters": {"learningRate": 1e-5, "batchSize": batch, "microBatchSize": micro,
                                     "maxSteps": steps, "evalEverySteps": 10**6, "maxSeqLength": SEQ},
                 "checkpointEverySteps": 10**6,
                 "deepspeed": {"zeroStage": 2, "precision": "bf16", "compileLayers": variant.compiled}})
    encoder = models.build_encoder(args.checkpoint, job.backbone, ctx.world)
    labels = tasks.get("mnli").labels
    clf = models.TaskModel(encoder, [models.HeadSpec("mnli", "classification", labels)], models.aux_loss(job.backbone))
    rng = random.Random(0)
    vocab = encoder.config.vocab_size
    features = [{"input_ids": [0] + [rng.randrange(5, vocab) for _ in range(SEQ - 2)] + [2],
                 "label": rng.randrange(len(labels))} for _ in range(steps * batch)]
    clock = StepClock(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reads = count_device_reads(clock)
    engine.train(job, ctx, clf, TrainingSet({"mnli": features}, {"mnli": formats.get("classification").collate}), 1,
                 save_best=lambda m: None, evaluator=None, metrics=None)
    times = clock.step_ms()
    seconds = sorted(times)[len(times) // 2] / 1e3  # the median step: one slow step (a GC pause) does not move it
    tokens_per_second = batch * SEQ / seconds
    result = {"config": args.config, "path": variant.path, "compiled": variant.compiled, "micro": micro,
              "batch": batch, "seq": SEQ, "step_ms": seconds * 1e3, "steps_ms": [round(t, 1) for t in times],
              "device_reads_per_step": reads["count"] / TIMED_STEPS, **clock.profiled,
              "zero_stage": engine.zero_stage(job, ctx.world),
              "tokens_per_s": tokens_per_second,
              "model_tflops": tokens_per_second * train_flops_per_token(encoder.config.to_dict(), SEQ, variant.moe) / 1e12,
              "attention": encoder.config._attn_implementation}
    if cuda:
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def eval_section(args) -> dict:
    import torch

    from stilts_trainer import engine, formats, tasks
    from stilts_trainer import model as models

    ctx = engine.init_distributed()
    labels = tasks.get("xnli").labels
    module = models.TaskModel(models.build_encoder(args.checkpoint, _dense(args.checkpoint), ctx.world, training=False),
                              [models.HeadSpec("xnli", "classification", labels)]).to(ctx.device)
    vocab = module.encoder.config.vocab_size
    rng = random.Random(1)
    # XNLI test pairs under XLM-R's tokenizer: about 50 tokens on average, few over 128.
    lengths = [min(SEQ, max(12, int(rng.lognormvariate(3.85, 0.35)))) for _ in range(500 if args.smoke else 5010)]
    features = [{"input_ids": [0] + [rng.randrange(5, vocab) for _ in range(n - 2)] + [2], "label": 0}
                for n in lengths]
    fmt = formats.get("classification")
    batch = 256  # micro batch x 8, as the phases evaluate
    result = {"examples": len(features), "mean_length": sum(lengths) / len(lengths), "batch": batch}
    predictions = {}
    for precision in ("fp32", "bf16"):
        dtype = torch.bfloat16 if precision == "bf16" else None
        engine.predict(module, fmt, features[:batch], batch, 1, ctx, autocast=dtype)  # warm up kernels
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        predictions[precision] = engine.predict(module, fmt, features, batch, 1, ctx, autocast=dtype)
        seconds = time.perf_counter() - start
        result[f"{precision}_examples_per_s"] = len(features) / seconds
        result[f"{precision}_tokens_per_s"] = sum(lengths) / seconds
        if ctx.device.type == "cuda":
            result[f"{precision}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["bf16_speedup"] = result["bf16_examples_per_s"] / result["fp32_examples_per_s"]
    result["prediction_agreement"] = sum(a == b for a, b in zip(*predictions.values())) / len(features)
    return result


def _dense(checkpoint: str):
    from stilts_trainer.job import BackboneRef

    return BackboneRef(name="xlmr-large", model=checkpoint)


def ceiling_section(args) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    props = torch.cuda.get_device_properties(0)
    return {"card": props.name, "memory_gib": props.total_memory / 2**30, "torch": torch.__version__,
            "matmul_tflops": 2 * n**3 / times[len(times) // 2] / 1e12}


ATTRIBUTION_VARIANTS = ("zero2 torch-adamw", "zero2 fused-adamw", "zero0 torch-adamw", "zero0 fused-adamw")


def attribute_section(args) -> dict:
    """Where a paper-batch step's time goes: forward, backward and optimizer step timed apart (the
    device synchronised between them), under optimizer and ZeRO variants, plus a kernel profile of
    the optimizer step."""
    import deepspeed
    import torch
    from torch.profiler import ProfilerActivity, profile

    from stilts_trainer import data, engine, formats, tasks
    from stilts_trainer import model as models
    from stilts_trainer.job import parse

    variant = args.config
    zero, optimizer_kind = variant.split()
    ctx = engine.init_distributed()
    micro = 2 if args.smoke else 32
    job = parse({"phase": "target", "task": "mnli", "backbone": {"name": "xlmr-large", "model": args.checkpoint},
                 "output": args.work, "hyperparameters": {"learningRate": 1e-5, "batchSize": micro,
                                                          "microBatchSize": micro, "maxSteps": 20},
                 "deepspeed": {"zeroStage": int(zero[-1]), "precision": "bf16"}})
    labels = tasks.get("mnli").labels
    clf = models.TaskModel(models.build_encoder(args.checkpoint, job.backbone, 1),
                           [models.HeadSpec("mnli", "classification", labels)])
    config = engine.deepspeed_config(job, data.schedule(10**4, micro, micro, 1), 20, ctx.device, 1, int(zero[-1]))
    groups = engine.parameter_groups(clf, job.hyperparameters.weight_decay)
    if optimizer_kind == "fused-adamw":  # the trainer's own
        optimizer = engine.optimizer(groups, job.hyperparameters)
    else:  # torch's multi-tensor AdamW, what DeepSpeed's config-built `torch_adam` gives
        optimizer = torch.optim.AdamW(groups, lr=1e-5, foreach=True)
    eng, *_ = deepspeed.initialize(model=clf, optimizer=optimizer, config=config)
    rng = random.Random(0)
    vocab = clf.encoder.config.vocab_size
    batch = formats.get("classification").collate(
        [{"input_ids": [0] + [rng.randrange(5, vocab) for _ in range(SEQ - 2)] + [2], "label": rng.randrange(3)}
         for _ in range(micro)], 1)
    batch = {k: v.to(ctx.device) for k, v in batch.items()}
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    phases = {"forward": [], "backward": [], "step": []}
    for i in range(12):
        sync()
        t0 = time.perf_counter()
        out = eng(**batch, task="mnli")
        sync()
        t1 = time.perf_counter()
        eng.backward(out["loss"])
        sync()
        t2 = time.perf_counter()
        eng.step()
        sync()
        t3 = time.perf_counter()
        if i >= WARMUP_STEPS:
            for name, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3))):
                phases[name].append((b - a) * 1e3)
    result = {"variant": variant, **{f"{k}_ms": sorted(v)[len(v) // 2] for k, v in phases.items()}}
    if variant == ATTRIBUTION_VARIANTS[0]:
        out = eng(**batch, task="mnli")
        eng.backward(out["loss"])
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            eng.step()
            sync()
        key = "cuda_time_total" if ctx.device.type == "cuda" else "cpu_time_total"
        result["step_profile"] = prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=60)
        result["step_profile_cpu"] = prof.key_averages().table(sort_by="cpu_time_total", row_limit=10,
                                                                max_name_column_width=60)
    return result


def attribute_eval_section(args) -> dict:
    """One evaluation batch (256 pairs, XNLI-like lengths, padded) timed in fp32, under bf16 autocast and
    with bf16 weights, with a kernel profile of the autocast forward."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from stilts_trainer import engine, formats, tasks
    from stilts_trainer import model as models

    ctx = engine.init_distributed()
    module = models.TaskModel(models.build_encoder(args.checkpoint, _dense(args.checkpoint), 1, training=False),
                              [models.HeadSpec("xnli", "classification", tasks.get("xnli").labels)]).to(ctx.device)
    module.eval()
    rng = random.Random(2)
    vocab = module.encoder.config.vocab_size
    lengths = sorted(min(SEQ, max(12, int(rng.lognormvariate(3.85, 0.35)))) for _ in range(256))
    batch = formats.get("classification").collate(
        [{"input_ids": [0] + [rng.randrange(5, vocab) for _ in range(n - 2)] + [2], "label": 0} for n in lengths], 1)
    batch = {k: v.to(ctx.device) for k, v in batch.items() if k != "labels"}
    cuda = ctx.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(autocast) -> float:
        times = []
        with torch.no_grad(), torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=autocast):
            for _ in range(7):
                sync()
                start = time.perf_counter()
                module(**batch, task="xnli")
                sync()
                times.append((time.perf_counter() - start) * 1e3)
        return sorted(times[2:])[len(times[2:]) // 2]

    result = {"tokens": int(batch["attention_mask"].sum()), "padded": list(batch["input_ids"].shape),
              "fp32_ms": timed(False), "autocast_bf16_ms": timed(True)}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof, torch.no_grad(), torch.autocast(ctx.device.type, dtype=torch.bfloat16):
        module(**batch, task="xnli")
        sync()
    result["step_profile"] = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total",
                                                       row_limit=12, max_name_column_width=60)
    module.to(torch.bfloat16)
    result["bf16_weights_ms"] = timed(False)
    return result


SECTIONS = {"attribute": attribute_section, "attribute_eval": attribute_eval_section, "make": make_checkpoint, "train": train_section, "eval": eval_section, "ceiling": ceiling_section}


def run_section(name: str, args, extra: list[str], timeout: int) -> dict:
    """One section in a fresh process: peak memory and failures stay its own."""
    command = [sys.executable, __file__, "--section", name, "--checkpoint", args.checkpoint, "--work",
               tempfile.mkdtemp(dir=args.tmp), *(["--smoke"] if args.smoke else []), *extra]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def table(results: dict) -> str:
    ceiling = results.get("ceiling", {})
    card = ceiling.get("card", "cpu")
    peak = datasheet_peak(card)
    measured = ceiling.get("matmul_tflops")
    lines = [f"card: {card}, torch {ceiling.get('torch', '?')}; bf16 matmul 8192^3: "
             f"{measured and round(measured)} TFLOP/s measured, {peak and round(peak / 1e12)} datasheet",
             f"{'training (XLM-R large, bf16, seq 128)':<52} {'ZeRO':>4} {'step ms':>8} {'tokens/s':>10} "
             f"{'TFLOP/s':>8} {'MFU':>6} {'of matmul':>9} {'peak GiB':>8} {'reads/step':>10} "
             f"{'launches/step':>13} {'GPU busy':>8}"]
    for name in TRAIN_CONFIGS:
        if name not in results:
            continue
        r = results[name]
        if "error" in r:
            lines.append(f"{name:<52} failed: {r['error'][-300:]}")
            continue
        mfu = f"{r['model_tflops'] * 1e12 / peak:.1%}" if peak else "-"
        roof = f"{r['model_tflops'] / measured:.1%}" if measured else "-"
        launches = "-" if r.get("launches_per_step") is None else f"{r['launches_per_step']:,.0f}"
        busy = "-" if r.get("gpu_busy") is None else f"{r['gpu_busy']:.0%}"
        lines.append(f"{name:<52} {r['zero_stage']:>4} {r['step_ms']:>8.1f} {r['tokens_per_s']:>10,.0f} "
                     f"{r['model_tflops']:>8.1f} {mfu:>6} {roof:>9} {r.get('peak_gib', 0):>8.1f} "
                     f"{r['device_reads_per_step']:>10.1f} {launches:>13} {busy:>8}")
    r = results.get("eval", {})
    if "error" in r:
        lines.append(f"eval failed: {r['error'][-300:]}")
    elif r:
        lines.append(f"XNLI evaluation, {r['examples']} pairs (mean {r['mean_length']:.0f} tokens), batch {r['batch']}: "
                     f"fp32 {r['fp32_examples_per_s']:,.0f} pairs/s, bf16 {r['bf16_examples_per_s']:,.0f} pairs/s "
                     f"({r['bf16_speedup']:.2f}x; predictions agree {r['prediction_agreement']:.1%}); peak GiB "
                     f"{r.get('fp32_peak_gib', 0):.1f} / {r.get('bf16_peak_gib', 0):.1f}")
    return "\n".join(lines)


def emit(section: str, result: dict) -> None:
    """One JSON line per finished section, flushed: a run cut short keeps what it measured."""
    print(json.dumps({"section": section, **result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", ""), help="directory for gpu-benchmark.json")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the code paths only")
    parser.add_argument("--only", default="", help="comma-separated parts of row names: run those rows only")
    parser.add_argument("--eval", action="store_true", help="also time XNLI-shaped evaluation, fp32 against bf16")
    parser.add_argument("--budget-s", type=float, default=450, help="start no training row after this many "
                        "seconds (the rows left are named as skipped): keeps a run inside a short device window")
    parser.add_argument("--attribute", action="store_true", help="time forward, backward and optimizer step apart "
                        "under ZeRO and optimizer variants, with a kernel profile of the step")
    parser.add_argument("--section", choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.section:
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = SECTIONS[args.section](args)
        # The host side of the same run: the basis of the trainer pods' memory request (manifests.py).
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        result["host_peak_gib"] = round(int(status["VmHWM"].split()[0]) / 2**20, 2)
        print("RESULT " + json.dumps(result), flush=True)
        return
    wanted = [part.strip() for part in args.only.split(",") if part.strip()]
    rows = sorted((name for name in TRAIN_CONFIGS if not wanted or any(part in name for part in wanted)),
                  key=lambda name: next(i for i, start in enumerate(RUN_ORDER) if name.startswith(start)))
    if not rows:
        parser.error(f"--only {args.only!r} names no row; rows are: {'; '.join(TRAIN_CONFIGS)}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp, args.checkpoint = tmp, os.path.join(tmp, "xlmr-large-random")
        results = {"ceiling": run_section("ceiling", args, [], 60)}
        emit("ceiling", results["ceiling"])
        if args.attribute:
            results["checkpoint"] = run_section("make", args, [], 120)
            for variant in ATTRIBUTION_VARIANTS:
                r = run_section("attribute", args, ["--config", variant], 120)
                for key in ("step_profile", "step_profile_cpu"):
                    print(r.pop(key, ""))
                print(json.dumps(r), flush=True)
            r = run_section("attribute_eval", args, [], 90)
            print(r.pop("step_profile", ""))
            print(json.dumps(r), flush=True)
            return
        results["checkpoint"] = run_section("make", args, [], 120)
        emit("checkpoint", results["checkpoint"])
        for name in rows:
            if time.perf_counter() - started > args.budget_s:
                results[name] = {"error": f"skipped: past --budget-s {args.budget_s:.0f}"}
            else:  # compiled rows compile XLM-R's layer once (about a minute), the rest load and run
                results[name] = run_section("train", args, ["--config", name], 240 if TRAIN_CONFIGS[name].compiled
                                            else 150)
            emit(name, results[name])
        if args.eval:
            results["eval"] = run_section("eval", args, [], 90)
            emit("eval", results["eval"])
    results["wall_s"] = round(time.perf_counter() - started, 1)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu-benchmark.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
