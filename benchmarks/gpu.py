"""The GPU benchmark: what one card gives stilts' own training loop at paper scale, in one command,
in about six minutes, with no hub access (XLM-R large's configuration with random weights).

    python benchmarks/gpu.py [--out DIR]      # on a machine with a CUDA GPU
    python benchmarks/gpu.py --smoke          # the same code paths on CPU with a tiny model (a check, no figures)

Each section runs in its own process (its peak memory is its own; a failure does not stop the rest):

- ceiling: a bf16 8192^3 matrix product, the card's measured roof beside its datasheet figure;
- dense:   fine-tuning steps of XLM-R large through `engine.train` (the loop every phase uses), bf16,
           ZeRO-2 as the spec asks (one card runs it as stage 0: nothing to partition; the table says
           which ran), at the paper's batch (32 x 128 tokens) and at a throughput batch (micro 64 x 4);
- moe:     the same model upcycled as stilts' default MoE arm (top-2, 8 experts in every second layer),
           one card, so expert parallelism 1;
- eval:    XNLI-shaped evaluation through `engine.predict` (5010 pairs, one language's test set,
           lengths like XNLI's), fp32 against bf16 autocast.

Model FLOPs utilisation counts the matrix products a token needs (6 x the active matrix parameters per
token, plus attention's 12 x layers x length x width), over the card's dense bf16 datasheet peak; a
top-2 MoE token runs two experts. Steady state: the first steps (allocation, kernel selection) are
left out.
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
# name -> (micro batch, global batch, MoE settings, precision path). "autocast" is the trainer's path for
# one bf16 process (engine.autocast_dtype: fp32 master weights, bf16 autocast, fused AdamW, foreach
# clipping); "deepspeed" is the path it replaced (DeepSpeed's bf16 with FP16_UnfusedOptimizer and its
# throughput timer on), kept to measure the difference on the same card in the same run.
TRAIN_CONFIGS = {
    "dense, paper batch 32": (32, 32, None, "autocast"),
    "dense, micro 64 x 4": (64, 256, None, "autocast"),
    "dense, micro 64 x 4, before (DeepSpeed bf16)": (64, 256, None, "deepspeed"),
    "moe top-2 x8, micro 64 x 4": (64, 256, MOE, "autocast"),
    "moe top-2 x8, micro 64 x 4, before (DeepSpeed bf16)": (64, 256, MOE, "deepspeed"),
}
WARMUP_STEPS = 3


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
    """Stands in for TrainerMetrics: the loop calls step() on rank 0 after optimizer steps."""

    def __init__(self, sync):
        self.sync, self.times = sync, {}

    def step(self, step, *args, **kwargs):
        self.sync()
        self.times[step] = time.perf_counter()

    def head(self, *args):
        pass

    def moe(self, *args):
        pass

    def dev_score(self, *args, **kwargs):
        pass

    def start(self, step):
        pass

    def flush(self):
        pass


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


def count_device_reads(clock, after_step: int) -> dict:
    """Host reads of device tensors (item, bool, int, tolist) and synchronize() calls, counted from
    `after_step` on: each one stalls the host until the GPU catches up (tests/trainer/sync_checks.py
    counts the same on CPU). The clock's own synchronize per step is left out."""
    import torch

    counted = {"count": 0}

    def counting(original, is_sync=False):
        def wrapper(*args, **kwargs):
            tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if clock.times and max(clock.times) >= after_step and (is_sync or (tensor is not None
                                                                               and tensor.device.type != "cpu")):
                counted["count"] += 1
            return original(*args, **kwargs)
        return wrapper

    for name in ("item", "__bool__", "__int__", "tolist"):
        setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    if torch.cuda.is_available():  # the clock holds the original: its own synchronize is not counted
        torch.cuda.synchronize = counting(torch.cuda.synchronize, is_sync=True)
    return counted


def train_section(args) -> dict:
    import torch

    from stilts_trainer import engine, formats, tasks
    from stilts_trainer import model as models
    from stilts_trainer.job import parse
    from stilts_trainer.sampling import TrainingSet

    micro, batch, moe, path = TRAIN_CONFIGS[args.config]
    if path == "deepspeed":  # the replaced path, for the comparison only
        timers_off = engine.deepspeed_config
        engine.autocast_dtype = lambda job, device, world: None
        engine.mixed_precision = lambda job, device, world: (device.type == "cuda", False)
        engine.deepspeed_config = lambda *a: {**timers_off(*a), "timers": {"throughput": {"enabled": True}}}
    if args.smoke:
        micro, batch = max(1, micro // 16), max(1, batch // 16)
    steps = 8 + WARMUP_STEPS if batch > micro else 20 + WARMUP_STEPS
    backbone = {"name": "xlmr-large", "model": args.checkpoint}
    if moe:
        backbone.update(architecture="moe", moe={k: v for k, v in moe.items()})
    ctx = engine.init_distributed()
    cuda = ctx.device.type == "cuda"
    job = parse({"phase": "target", "task": "mnli", "backbone": backbone, "output": args.work,
                 "hyperparameters": {"learningRate": 1e-5, "batchSize": batch, "microBatchSize": micro,
                                     "maxSteps": steps, "evalEverySteps": 10**6, "maxSeqLength": SEQ},
                 "checkpointEverySteps": 10**6, "deepspeed": {"zeroStage": 2, "precision": "bf16"}})
    encoder = models.build_encoder(args.checkpoint, job.backbone, ctx.world)
    labels = tasks.get("mnli").labels
    clf = models.TaskModel(encoder, [models.HeadSpec("mnli", "classification", labels)], models.aux_loss(job.backbone))
    rng = random.Random(0)
    vocab = encoder.config.vocab_size
    features = [{"input_ids": [0] + [rng.randrange(5, vocab) for _ in range(SEQ - 2)] + [2],
                 "label": rng.randrange(len(labels))} for _ in range(steps * batch)]
    clock = StepClock(torch.cuda.synchronize if cuda else (lambda: None))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reads = count_device_reads(clock, WARMUP_STEPS)
    engine.train(job, ctx, clf, TrainingSet({"mnli": features}, {"mnli": formats.get("classification").collate}), 1,
                 save_best=lambda m: None, evaluator=None, metrics=clock)
    recorded = sorted(s for s in clock.times if s >= WARMUP_STEPS)
    first, last = recorded[0], recorded[-1]
    seconds = (clock.times[last] - clock.times[first]) / (last - first)
    tokens_per_second = batch * SEQ / seconds
    result = {"config": args.config, "path": path, "micro": micro, "batch": batch, "seq": SEQ,
              "step_ms": seconds * 1e3, "device_reads_per_step": reads["count"] / max(1, last - WARMUP_STEPS),
              "zero_stage": engine.zero_stage(job, ctx.world),
              "tokens_per_s": tokens_per_second,
              "model_tflops": tokens_per_second * train_flops_per_token(encoder.config.to_dict(), SEQ, moe) / 1e12,
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
             f"{measured and round(measured)} TFLOP/s measured, {peak and round(peak / 1e12)} datasheet"]
    # The spec asks for ZeRO-2; a single process runs stage 0 (engine.zero_stage: nothing to partition).
    stages = sorted({results.get(name, {}).get("zero_stage", 2) for name in TRAIN_CONFIGS})
    title = f"training (XLM-R large, bf16, ZeRO-{'/'.join(map(str, stages))}, seq 128)"
    lines.append(f"{title:<52} {'step ms':>8} {'tokens/s':>10} "
                 f"{'TFLOP/s':>8} {'MFU':>6} {'of matmul':>9} {'peak GiB':>8} {'reads/step':>10}")
    for name in TRAIN_CONFIGS:
        r = results.get(name, {})
        if "error" in r:
            lines.append(f"{name:<52} failed: {r['error'][-300:]}")
            continue
        mfu = f"{r['model_tflops'] * 1e12 / peak:.1%}" if peak else "-"
        roof = f"{r['model_tflops'] / measured:.1%}" if measured else "-"
        lines.append(f"{name:<52} {r['step_ms']:>8.1f} {r['tokens_per_s']:>10,.0f} {r['model_tflops']:>8.1f} "
                     f"{mfu:>6} {roof:>9} {r.get('peak_gib', 0):>8.1f} {r['device_reads_per_step']:>10.1f}")
    r = results.get("eval", {})
    if "error" in r:
        lines.append(f"eval failed: {r['error'][-300:]}")
    elif r:
        lines.append(f"XNLI evaluation, {r['examples']} pairs (mean {r['mean_length']:.0f} tokens), batch {r['batch']}: "
                     f"fp32 {r['fp32_examples_per_s']:,.0f} pairs/s, bf16 {r['bf16_examples_per_s']:,.0f} pairs/s "
                     f"({r['bf16_speedup']:.2f}x; predictions agree {r['prediction_agreement']:.1%}); peak GiB "
                     f"{r.get('fp32_peak_gib', 0):.1f} / {r.get('bf16_peak_gib', 0):.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", ""), help="directory for gpu-benchmark.json")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the code paths only")
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
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp, args.checkpoint = tmp, os.path.join(tmp, "xlmr-large-random")
        results = {"ceiling": run_section("ceiling", args, [], 60)}
        results["checkpoint"] = run_section("make", args, [], 120)
        if args.attribute:
            for variant in ATTRIBUTION_VARIANTS:
                r = run_section("attribute", args, ["--config", variant], 120)
                for key in ("step_profile", "step_profile_cpu"):
                    print(r.pop(key, ""))
                print(json.dumps(r), flush=True)
            r = run_section("attribute_eval", args, [], 90)
            print(r.pop("step_profile", ""))
            print(json.dumps(r), flush=True)
            return
        print(json.dumps(results, indent=1), flush=True)
        for name in TRAIN_CONFIGS:
            results[name] = run_section("train", args, ["--config", name], 150)
            print(name, json.dumps(results[name]), flush=True)
        results["eval"] = run_section("eval", args, [], 90)
        print("eval", json.dumps(results["eval"]), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu-benchmark.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
