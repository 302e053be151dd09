"""Step time and tokens/s of the tiny MoE against the tiny dense model, ep=1 vs ep=2 on 2 CPU
processes, and the share of the step spent in the MoE all-to-all (forward dispatch + combine, from
DeepSpeed's own MoE timers; the backward all-to-all is not timed by DeepSpeed and not counted).

Same active parameters: a top-1 MoE runs one expert (a copy of the dense FFN) per token, so its
active parameters equal the dense model's; top-2 runs two. Each configuration runs under torchrun
with 2 processes, in alternation, best of --repeats.

    .venv/bin/python benchmarks/moe_throughput.py [--steps 40] [--repeats 2]
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


def worker(args) -> None:
    """One configuration, inside torchrun: time `steps` optimizer steps after a warmup."""
    import torch

    from stilts_trainer import data, engine, formats, model, moe, synthetic, tasks
    from stilts_trainer.sampling import TrainingSet
    from stilts_trainer.job import parse

    settings = json.loads(args.moe) if args.moe else None
    directory = os.path.join(args.tmp, "dense")
    backbone = {"name": "b", "model": directory}
    if settings:
        backbone.update(architecture="moe", moe={**settings, "everyNLayers": 2, "dropTokens": True})
    ctx = engine.init_distributed()
    tokenizer = model.train_tokenizer(synthetic.mlm_corpus(0, 300))
    torch.manual_seed(0)
    if ctx.is_main and not os.path.isdir(directory):
        mlm = model.tiny_mlm("stilts/tiny-xlmr", tokenizer)
        mlm.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    torch.distributed.barrier()
    job = parse({"phase": "target", "task": "mnli", "backbone": backbone, "output": os.path.join(args.tmp, "o"),
                 "hyperparameters": {"learningRate": 1e-4, "batchSize": 32, "microBatchSize": 16,
                                     "maxSteps": args.steps, "evalEverySteps": 10**6, "maxSeqLength": 128},
                 "checkpointEverySteps": 10**6, "deepspeed": {"zeroStage": 2}})
    encoder = model.build_encoder(directory, job.backbone, ctx.world)
    clf = model.TaskModel(encoder, [model.HeadSpec("mnli", "classification", tasks.get("mnli").labels)],
                          model.aux_loss(job.backbone))
    for layer in moe.moe_layers(clf):
        layer.moe.deepspeed_moe.wall_clock_breakdown = True
    items = data.encode(tasks.get("mnli"), data.load_examples("mnli", "train", "synthetic", 1), tokenizer, 128,
                        tasks.get("mnli").labels)
    items = items[: (args.steps + 5) * 32]
    tokens = sum(len(i["input_ids"]) for i in items[: args.steps * 32])
    start = time.perf_counter()
    engine.train(job, ctx, clf, TrainingSet({"mnli": items}, {"mnli": formats.get("classification").collate}),
                 tokenizer.pad_token_id, save_best=lambda m: None, evaluator=lambda m: 0.0)
    elapsed = time.perf_counter() - start
    a2a = sum(layer.moe.deepspeed_moe.time_falltoall + layer.moe.deepspeed_moe.time_salltoall
              for layer in moe.moe_layers(clf)) / 1000.0  # ms -> s; DeepSpeed accumulates over forwards
    if ctx.is_main:
        print("RESULT " + json.dumps({"seconds": elapsed, "tokens": tokens, "a2a_seconds": a2a,
                                      "steps": args.steps}), flush=True)


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
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, settings in CONFIGS:
                r = run(name, settings, args.steps, tmp)
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
    dense = best["dense"]
    print(f"2 processes (gloo, CPU), {args.steps} steps of global batch 32, best of {args.repeats}")
    print(f"{'config':<16} {'step ms':>8} {'tokens/s':>9} {'vs dense':>9} {'a2a share (fwd)':>16}")
    for name, r in best.items():
        step = r["seconds"] / r["steps"]
        share = r["a2a_seconds"] / r["seconds"]  # forward all-to-all on rank 0, whole run
        print(f"{name:<16} {step * 1000:8.1f} {r['tokens'] / r['seconds']:9.0f} "
              f"{dense['seconds'] / r['seconds']:8.2f}x {share:15.1%}")


if __name__ == "__main__":
    main()
