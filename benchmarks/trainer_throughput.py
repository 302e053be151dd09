"""Trainer throughput against a plain Hugging Face `Trainer` loop, and evaluation with length-sorted
dynamic padding against fixed-length padding. Same tiny model and synthetic data, one process,
ratios measured within one run (the machine is shared and noisy: each side runs alternately, best
of `--repeats`). Training throughput is steady state for all: from the start of step `--warmup` + 1
to the end of training (setup, DeepSpeed's or the Trainer's, and the first steps are left out);
tokens are real tokens, padding not counted. Besides both with their defaults: both grouping batches
by length, and a bare PyTorch loop on stilts' own batches (the floor: what any trainer of this model
must compute). The Trainer runs in a fresh process of its own.

    .venv/bin/python benchmarks/trainer_throughput.py [--steps 60] [--repeats 3]
    .venv/bin/python benchmarks/trainer_throughput.py --smoke   # every arm for a few steps, once (a check)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from stilts_trainer import data, engine, formats, model, synthetic, tasks  # noqa: E402
from stilts_trainer.sampling import TrainingSet  # noqa: E402
from stilts_trainer.job import parse  # noqa: E402


def setup(max_len: int):
    tokenizer = model.train_tokenizer(synthetic.mlm_corpus(0, 300))
    examples = data.load_examples("mnli", "train", "synthetic", 1)
    mnli = tasks.get("mnli")
    items = data.encode(mnli, examples, tokenizer, max_len, mnli.labels)
    return tokenizer, examples, items


def classifier(tokenizer) -> model.TaskModel:
    return model.TaskModel(model.tiny_mlm("stilts/tiny-xlmr", tokenizer).roberta,
                           [model.HeadSpec("mnli", "classification", tasks.get("mnli").labels)])


def ours(tokenizer, items, steps: int, batch: int, out: Path, warmup: int, group_by_length: bool = False) -> float:
    job = parse({"phase": "pretrain", "backbone": {"name": "b", "model": "stilts/tiny-xlmr"}, "output": str(out),
                 "hyperparameters": {"learningRate": 1e-4, "batchSize": batch, "microBatchSize": batch,
                                     "maxSteps": steps, "evalEverySteps": 10**6, "groupByLength": group_by_length},
                 "checkpointEverySteps": 10**6,
                 "deepspeed": {"zeroStage": 2}})  # the default; one process runs without ZeRO
    ctx = engine.init_distributed()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    clf = classifier(tokenizer)
    used = items[: steps * batch]
    collate, calls, timed = formats.get("classification").collate, [], []

    def timed_collate(features, pad_id):  # called once per step, as the step begins
        calls.append(time.perf_counter())
        if len(calls) > warmup:
            timed.append(sum(len(f["input_ids"]) for f in features))
        return collate(features, pad_id)

    engine.train(job, ctx, clf, TrainingSet({"mnli": used}, {"mnli": timed_collate}),
                 tokenizer.pad_token_id, save_best=lambda m: None, evaluator=lambda m: 0.0)
    return sum(timed) / (time.perf_counter() - calls[warmup])


def bare_loop(tokenizer, items, steps: int, batch: int, warmup: int) -> float:
    """The floor: the same model on the same micro-batches as `ours`, with nothing but forward, backward,
    clipping and the fused AdamW step (no scheduler, logging, checkpoints or evaluation)."""
    torch.manual_seed(0)
    clf = classifier(tokenizer)
    used = items[: steps * batch]
    sched = data.schedule(len(used), batch, batch, 1)
    batches = data.epoch_batches(len(used), sched, 1, 0, 0)
    adam = torch.optim.AdamW(clf.parameters(), lr=1e-4, fused=True)
    collate, tokens = formats.get("classification").collate, 0
    for step, indices in enumerate(batches):
        if step == warmup:
            started = time.perf_counter()
        features = [used[i] for i in indices]
        if step >= warmup:
            tokens += sum(len(f["input_ids"]) for f in features)
        clf(**collate(features, tokenizer.pad_token_id))["loss"].backward()
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0, foreach=True)
        adam.step()
        adam.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - started)


def hf_trainer(tokenizer, examples, steps: int, batch: int, max_len: int, out: Path, warmup: int,
               group_by_length: bool = False) -> float:
    from datasets import Dataset
    from transformers import (DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments,
                              XLMRobertaForSequenceClassification)

    torch.manual_seed(0)
    config = model.tiny_mlm("stilts/tiny-xlmr", tokenizer).config
    config.num_labels = 3
    clf = XLMRobertaForSequenceClassification(config)
    ds = Dataset.from_list(examples[: steps * batch]).map(
        lambda b: tokenizer(b["text_a"], b["text_b"], truncation=True, max_length=max_len), batched=True,
        remove_columns=["text_a", "text_b"])
    padding, calls, timed = DataCollatorWithPadding(tokenizer), [], []

    def timed_collate(features):  # called once per step, as the step begins (no workers, no prefetch)
        calls.append(time.perf_counter())
        if len(calls) > warmup:
            timed.append(sum(len(f["input_ids"]) for f in features))
        return padding(features)

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=1e-4, warmup_steps=max(1, steps // 10), max_grad_norm=1.0, report_to=[],
                             save_strategy="no", logging_strategy="no", use_cpu=not torch.cuda.is_available(),
                             dataloader_num_workers=0, disable_tqdm=True,
                             train_sampling_strategy="group_by_length" if group_by_length else "random")
    trainer = Trainer(model=clf, args=args, train_dataset=ds, data_collator=timed_collate)
    trainer.train()
    return sum(timed) / (time.perf_counter() - calls[warmup])


def hf_alone(tokenizer, examples, steps: int, batch: int, max_len: int, warmup: int, group_by_length: bool) -> float:
    """The HF Trainer in a fresh process: in this one it would find stilts' process group of one and
    wrap the model in DistributedDataParallel, a cost a plain single-process Trainer run does not pay."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    import transformers
    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        return hf_trainer(tokenizer, examples, steps, batch, max_len, Path(tmp), warmup, group_by_length)


def evaluation(tokenizer, max_len: int, dynamic: bool, batch: int, limit: int) -> float:
    ctx = engine.init_distributed()
    torch.manual_seed(0)
    clf = classifier(tokenizer).eval()
    examples = [e for lang in synthetic.XNLI_LANGUAGES
                for e in data.load_examples("xnli", "test", "synthetic", 0, lang)][:limit]
    xnli = tasks.get("xnli")
    items = data.encode(xnli, examples, tokenizer, max_len, xnli.labels)
    start = time.perf_counter()
    if dynamic:
        engine.predict(clf, formats.get("classification"), items, batch, tokenizer.pad_token_id, ctx)
    else:  # the common baseline: every batch padded to max length, in data order
        with torch.no_grad():
            for i in range(0, len(items), batch):
                chunk = items[i:i + batch]
                ids = torch.full((len(chunk), max_len), tokenizer.pad_token_id)
                for r, it in enumerate(chunk):
                    ids[r, : len(it["input_ids"])] = torch.tensor(it["input_ids"])
                clf(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long())
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    parser.add_argument("--eval-examples", type=int, default=6000)
    parser.add_argument("--smoke", action="store_true", help="6 steps, batch 8, once (the suite runs it)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.batch, args.repeats, args.eval_examples = 6, 2, 8, 1, 256
    import transformers
    transformers.utils.logging.set_verbosity_error()
    tokenizer, examples, items = setup(args.max_len)
    best = {"ours": 0.0, "ours_grouped": 0.0, "bare": 0.0, "hf": 0.0, "hf_grouped": 0.0, "dynamic": 0.0,
            "fixed": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            best["ours"] = max(best["ours"], ours(tokenizer, items, args.steps, args.batch, Path(tmp) / f"o{r}",
                                                  args.warmup))
            best["ours_grouped"] = max(best["ours_grouped"], ours(tokenizer, items, args.steps, args.batch,
                                                                  Path(tmp) / f"og{r}", args.warmup, True))
            best["bare"] = max(best["bare"], bare_loop(tokenizer, items, args.steps, args.batch, args.warmup))
            for key, grouped in (("hf", False), ("hf_grouped", True)):
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as alone:
                    best[key] = max(best[key], alone.submit(hf_alone, tokenizer, examples, args.steps, args.batch,
                                                            args.max_len, args.warmup, grouped).result())
            best["dynamic"] = max(best["dynamic"], evaluation(tokenizer, args.max_len, True, args.batch * 4,
                                                           args.eval_examples))
            best["fixed"] = max(best["fixed"], evaluation(tokenizer, args.max_len, False, args.batch * 4,
                                                       args.eval_examples))
    print(f"threads={torch.get_num_threads()} steps={args.steps} (timed after {args.warmup}) batch={args.batch} "
          f"max_len={args.max_len} repeats={args.repeats} (best of)")
    print(f"training tokens/s   stilts (DeepSpeed) {best['ours']:10.0f}   HF Trainer {best['hf']:10.0f}   "
          f"ratio {best['ours'] / best['hf']:.2f}")
    print(f"  both grouping batches by length (groupByLength; the Trainer's train_sampling_strategy="
          f"'group_by_length'): {best['ours_grouped']:.0f} vs {best['hf_grouped']:.0f}, ratio "
          f"{best['ours_grouped'] / best['hf_grouped']:.2f}")
    print(f"  bare PyTorch loop on stilts' batches (forward, backward, clip, step) {best['bare']:8.0f}   "
          f"stilts / that {best['ours'] / best['bare']:.2f}, that / HF Trainer {best['bare'] / best['hf']:.2f}")
    print(f"evaluation ex/s     sorted+dynamic    {best['dynamic']:10.0f}   fixed-length {best['fixed']:8.0f}   "
          f"ratio {best['dynamic'] / best['fixed']:.2f}")


if __name__ == "__main__":
    main()
