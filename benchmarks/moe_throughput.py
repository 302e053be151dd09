"""Step time and tokens/s of the tiny MoE against the tiny dense model, ep=1 vs ep=2 on 2 CPU
processes, and the share of the step spent in the MoE all-to-all (forward dispatch + combine, from
DeepSpeed's own MoE timers; the backward all-to-all is not timed by DeepSpeed and not counted).

Same active parameters: a top-1 MoE runs one expert (a copy of the dense FFN) per token, so its
active parameters equal the dense model's; top-2 runs two. Each configuration runs under torchrun
with 2 processes, in alternation, best of --repeats. Steady state: the timing starts as the step after
5 warmup steps begins (DeepSpeed's initialisation, longer with MoE, is left out).

    .venv/bin/python benchmarks/moe_throughput.py [--steps 40] [--repeats 2]
    .venv/bin/python benchmarks/moe_throughput.py --smoke   # every configuration, 3 steps, once (a check)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIGS = [
    ("dense", None),
    ("moe top-1 ep=1", {"experts": 4, "topK": 1, "expertParallelSize": 1}),
    ("moe top-1 ep=2", {"experts": 4, "topK": 1, "expertParallelSize": 2}),
    ("moe top-2 ep=1", {"experts": 4, "topK": 2, "expertParallelSize": 1}),
    ("moe top-2 ep=2", {"experts": 4, "topK": 2, "expertParallelSize": 2}),
]


WARMUP = 5  # steps left out of the timing, after DeepSpeed's initialisation (which MoE makes longer)


def build(args):
    """The job, the classifier and the training examples of one configuration, on every rank."""
    import torch

    from stilts_trainer import data, engine, model, moe, synthetic, tasks
    from stilts_trainer.job import parse

    settings = json.loads(args.moe) if args.moe else None
    directory = os.path.join(args.tmp, "dense")
    backbone = {"name": "b", "model": directory}
    if settings:
        backbone.update(architecture="moe", moe={**settings, "everyNLayers": 2, "dropTokens": True})
    ctx = engine.init_distributed()
    tokenizer = model.train_tokenizer(synthetic.mlm_corpus(0, 300))
    torch.manual_seed(0)
    output = os.path.join(args.tmp, "o")
    if ctx.is_main and not os.path.isdir(directory):
        mlm = model.tiny_mlm("stilts/tiny-xlmr", tokenizer)
        mlm.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    if ctx.is_main:  # the loop writes its progress there; a job's executor creates it, here nobody else does
        os.makedirs(output, exist_ok=True)
    torch.distributed.barrier()
    job = parse({"phase": "target", "task": "mnli", "backbone": backbone, "output": output,
                 "hyperparameters": {"learningRate": 1e-4, "batchSize": 32, "microBatchSize": 16,
                                     "maxSteps": WARMUP + args.steps, "evalEverySteps": 10**6, "maxSeqLength": 128},
                 "checkpointEverySteps": 10**6, "deepspeed": {"zeroStage": 2}})
    encoder = model.build_encoder(directory, job.backbone, ctx.world)
    clf = model.TaskModel(encoder, [model.HeadSpec("mnli", "classification", tasks.get("mnli").labels)],
                          model.aux_loss(job.backbone))
    for layer in moe.moe_layers(clf):
        layer.moe.deepspeed_moe.wall_clock_breakdown = True
    items = data.encode(tasks.get("mnli"), data.load_examples("mnli", "train", "synthetic", 1), tokenizer, 128,
                        tasks.get("mnli").labels)
    return ctx, job, clf, tokenizer, items[: (WARMUP + args.steps) * 32]


def a2a_seconds(clf) -> float:
    """Forward all-to-all time so far on this rank (DeepSpeed accumulates it over forwards, in ms)."""
    from stilts_trainer import moe

    return sum(layer.moe.deepspeed_moe.time_falltoall + layer.moe.deepspeed_moe.time_salltoall
               for layer in moe.moe_layers(clf)) / 1000.0


def worker(args) -> None:
    """One configuration, inside torchrun: time `steps` optimizer steps after WARMUP steps."""
    from stilts_trainer import engine, formats
    from stilts_trainer.sampling import TrainingSet

    ctx, job, clf, tokenizer, items = build(args)
    collate, calls, tokens, at_start = formats.get("classification").collate, [], [], []

    def timed_collate(features, pad_id):  # called once per step (no accumulation here), as the step begins
        calls.append(time.perf_counter())
        if len(calls) == WARMUP + 1:
            at_start.append(a2a_seconds(clf))
        if len(calls) > WARMUP:
            tokens.append(sum(len(f["input_ids"]) for f in features))
        return collate(features, pad_id)

    engine.train(job, ctx, clf, TrainingSet({"mnli": items}, {"mnli": timed_collate}),
                 tokenizer.pad_token_id, save_best=lambda m: None, evaluator=lambda m: 0.0)
    elapsed = time.perf_counter() - calls[WARMUP]
    if ctx.is_main:  # tokens: this rank's times the ranks (both draw from the same examples)
        print("RESULT " + json.dumps({"seconds": elapsed, "tokens": sum(tokens) * ctx.world,
                                      "a2a_seconds": a2a_seconds(clf) - at_start[0], "steps": args.steps}),
              flush=True)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(name: str, settings, steps: int, tmp: str) -> dict:
    cmd = [sys.executable, "-m", "stilts_trainer.launch", "--nproc-per-node", "2", "--master-port", str(free_port()),
           __file__, "--worker", "--steps", str(steps), "--tmp", tmp]
    if settings:
        cmd += ["--moe", json.dumps(settings)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--moe", default="")
    parser.add_argument("--tmp", default="")
    parser.add_argument("--smoke", action="store_true", help="3 steps, once: checks every configuration runs")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.smoke:
        args.steps, args.repeats = 3, 1
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, settings in CONFIGS:
                r = run(name, settings, args.steps, tmp)
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
    dense = best["dense"]
    print(f"2 processes (gloo, CPU), {args.steps} steps of global batch 32 after {WARMUP} warmup steps, "
          f"best of {args.repeats}")
    print(f"{'config':<16} {'step ms':>8} {'tokens/s':>9} {'vs dense':>9} {'a2a share (fwd)':>16}")
    for name, r in best.items():
        step = r["seconds"] / r["steps"]
        share = r["a2a_seconds"] / r["seconds"]  # forward all-to-all on rank 0, timed steps
        print(f"{name:<16} {step * 1000:8.1f} {r['tokens'] / r['seconds']:9.0f} "
              f"{dense['seconds'] / r['seconds']:8.2f}x {share:15.1%}")


if __name__ == "__main__":
    main()
