"""The five phases. Each reads its job, its parent's `model/`, and writes its own output directory;
`run` writes `COMPLETE` last."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import data, engine, model, moe, synthetic, tasks
from .checkpoint import is_complete, mark_complete, write_json_atomic
from .job import TINY_MODELS, Job, dump
from .metrics import TrainerMetrics

log = logging.getLogger("stilts_trainer")

SYNTHETIC_CORPUS_PER_LANGUAGE = 1500
HUB_CORPUS = ("wikimedia/wikipedia", "20231101.{lang}", "text")  # per-language MLM text for continued pretraining


def model_source(job: Job) -> str:
    """Where this phase's starting weights live: the parent's output, or the backbone itself."""
    if job.parent:
        return str(Path(job.parent) / "model")
    return model.hub_path(job.backbone.model, job.mirror)


def _metrics(job: Job, ctx: engine.Context) -> TrainerMetrics | None:
    if not ctx.is_main:
        return None
    labels = {"experiment": job.experiment, "job_hash": job.job_hash, "phase": job.phase,
              "backbone": job.backbone.name, "task": job.task or ""}
    return TrainerMetrics(labels, job.metrics_port)


def _save(module, tokenizer, directory: Path, job: Job, ctx: engine.Context) -> None:
    engine.save_collective(ctx, directory,
                           lambda tmp: model.save_model(module, tokenizer, tmp, job.backbone, ctx.is_main))


def load_classifier(source: str, job: Job, ctx: engine.Context, num_labels: int):
    """A trained classifier, head included, for evaluation."""
    head = Path(source) / "head.pt"
    if not head.is_file():
        raise ValueError(f"parent: {Path(source).parent} has no classification head (head.pt); "
                         "evaluate needs the output of a target job")
    classifier = model.Classifier(model.build_encoder(source, job.backbone, ctx.world, training=False), num_labels)
    classifier.head.load_state_dict(torch.load(head, weights_only=True))
    moe.attach_groups(classifier)
    return classifier.to(ctx.device)


def prefetch(job: Job, ctx: engine.Context) -> dict:
    """Fill the shared Hugging Face cache once, so training pods never reach the hubs."""
    fetched = []
    if job.data_source == "synthetic":
        return {"fetched": fetched}
    if ctx.is_main:
        for model_id in job.prefetch.models:
            if model_id in TINY_MODELS:
                continue
            model.load_tokenizer(model.hub_path(model_id, job.mirror))
            model.load_mlm(model.hub_path(model_id, job.mirror))
            fetched.append(model_id)
        for name in job.prefetch.tasks:
            task = tasks.get(name)
            for split in task.hub:
                for language in task.languages:
                    data.load_examples(name, split, "hub", job.seed, language, job.mirror, job.cache_dir)
            fetched.append(name)
    dist.barrier()
    return {"fetched": fetched}


def _corpus(job: Job) -> list[str]:
    if job.data_source == "synthetic":
        return synthetic.mlm_corpus(0, SYNTHETIC_CORPUS_PER_LANGUAGE)
    import datasets

    per_language = job.hyperparameters.max_train_examples or 10000
    lines = []
    dataset, config, text_field = HUB_CORPUS
    for lang in synthetic.XNLI_LANGUAGES:
        stream = datasets.load_dataset(data.hub_dataset_path(dataset, job.mirror), config.format(lang=lang),
                                       split="train", streaming=True, cache_dir=job.cache_dir or None)
        lines.extend(row[text_field] for row, _ in zip(stream, range(per_language)))
    return lines


def pretrain(job: Job, ctx: engine.Context) -> dict:
    """Masked-LM: builds a tiny backbone from scratch offline, or continues a parent's pretraining."""
    out = Path(job.output)
    corpus = _corpus(job)
    if job.parent or job.backbone.model not in TINY_MODELS:
        source = model_source(job)
        tokenizer = model.load_tokenizer(source)
        mlm = model.build_mlm(source, job.backbone, ctx.world)
    else:
        tok_dir = out / "tokenizer"
        if ctx.is_main and not (tok_dir / "tokenizer.json").exists():
            model.train_tokenizer(corpus).save_pretrained(tok_dir)  # one rank: the trainer is threaded
        dist.barrier()
        tokenizer = model.load_tokenizer(str(tok_dir))
        if job.backbone.architecture == "moe":
            raise ValueError("backbone.architecture: a tiny model is built dense; upcycle it in a later job "
                             "(give this job's output as parent)")
        torch.manual_seed(job.seed)
        mlm = model.tiny_mlm(job.backbone.model, tokenizer)
    items = [{"input_ids": ids} for ids in tokenizer(corpus, truncation=True,
                                                         max_length=job.hyperparameters.max_seq_length)["input_ids"]]
    module = model.MaskedLM(mlm, model.aux_weight(job.backbone))
    metrics = _metrics(job, ctx)
    state = engine.train(
        job, ctx, module, items, tokenizer.pad_token_id,
        save_best=lambda m: _save(m, tokenizer, out / "model", job, ctx),
        batch_transform=lambda b, g: data.mask_tokens(b, tokenizer, job.hyperparameters.mlm_probability, g),
        metrics=metrics)
    return {"steps": state.step}


def finetune(job: Job, ctx: engine.Context) -> dict:
    """`intermediate` and `target`: a task head on the inherited encoder, selected on English dev."""
    task = tasks.get(job.task)
    hp = job.hyperparameters
    out = Path(job.output)
    source = model_source(job)
    tokenizer = model.load_tokenizer(source)
    torch.manual_seed(job.seed)
    classifier = model.Classifier(model.build_encoder(source, job.backbone, ctx.world), task.num_labels,
                                  model.aux_weight(job.backbone))
    train_items = data.encode(data.load_examples(task.name, "train", job.data_source, job.seed, "en", job.mirror,
                                                 job.cache_dir, hp.max_train_examples), tokenizer, hp.max_seq_length)
    dev_items = data.encode(data.load_examples(task.name, "dev", job.data_source, job.seed, "en", job.mirror,
                                               job.cache_dir), tokenizer, hp.max_seq_length)
    # Selection uses a fixed subset of the English dev set only: zero-shot means no target-language dev.
    subset = dev_items[: hp.eval_examples]
    eval_batch = hp.micro_batch_size * 8

    def evaluator(module):
        return engine.evaluate_accuracy(module, subset, eval_batch, tokenizer.pad_token_id, ctx)[0]

    metrics = _metrics(job, ctx)
    state = engine.train(
        job, ctx, classifier, train_items, tokenizer.pad_token_id,
        save_best=lambda m: _save(m, tokenizer, out / "model", job, ctx),
        evaluator=evaluator, metrics=metrics)
    # Report the selected model on the whole English dev set.
    best = load_classifier(str(out / "model"), job, ctx, task.num_labels)
    dev_acc, _ = engine.evaluate_accuracy(best, dev_items, eval_batch, tokenizer.pad_token_id, ctx)
    return {"steps": state.step, "bestStep": state.best_step, "stoppedEarly": state.stopped_early,
            "devAccuracy": round(dev_acc, 4), "metric": task.metric, "history": state.history}


def evaluate(job: Job, ctx: engine.Context) -> dict:
    """Zero-shot accuracy of the target model on every language, dev and test."""
    task = tasks.get(job.task)
    hp = job.hyperparameters
    source = model_source(job)
    tokenizer = model.load_tokenizer(source)
    classifier = load_classifier(source, job, ctx, task.num_labels)
    per_language = {}
    started = time.perf_counter()
    for language in job.languages:
        per_language[language] = {}
        for split in ("dev", "test"):
            items = data.encode(data.load_examples(task.name, split, job.data_source, job.seed, language,
                                                   job.mirror, job.cache_dir), tokenizer, hp.max_seq_length)
            acc, _ = engine.evaluate_accuracy(classifier, items, hp.micro_batch_size * 8,
                                              tokenizer.pad_token_id, ctx)
            per_language[language][split] = round(acc, 4)
    average = {split: round(sum(v[split] for v in per_language.values()) / len(per_language), 4)
               for split in ("dev", "test")}
    results = {"task": task.name, "backbone": job.backbone.name, "seed": job.seed, "languages": per_language,
               "average": average, "seconds": round(time.perf_counter() - started, 2)}
    if ctx.is_main:
        write_json_atomic(Path(job.output) / "results.json", results)
    return {"average": average, "test": {k: v["test"] for k, v in per_language.items()}}


PHASES = {"prefetch": prefetch, "pretrain": pretrain, "intermediate": finetune, "target": finetune,
          "evaluate": evaluate}


def termination_log_path() -> Path | None:
    path = Path(os.environ.get("STILTS_TERMINATION_LOG", "/dev/termination-log"))
    return path if path.exists() else None


def run(job: Job) -> dict:
    """Run one job to its COMPLETE marker; a finished job returns its summary without running again."""
    out = Path(job.output)
    if is_complete(out):
        summary = json.loads((out / "COMPLETE").read_text())
        log.info("%s already complete", out)
        return summary
    ctx = engine.init_distributed()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "job.json", dump(job))
    dist.barrier()
    started = time.time()
    result = PHASES[job.phase](job, ctx)
    summary = {"phase": job.phase, "task": job.task, "backbone": job.backbone.name, "seed": job.seed,
               "jobHash": job.job_hash, "worldSize": ctx.world, "seconds": round(time.time() - started, 1),
               **{k: v for k, v in result.items() if k != "history"}}
    dist.barrier()
    if ctx.is_main:
        write_json_atomic(out / "metrics.json", result)
        mark_complete(out, summary)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only a finished job's output is ever read
        path = termination_log_path()
        if path:
            # Kubernetes keeps 4096 bytes of it: the compact summary, no history.
            path.write_text(json.dumps(summary, separators=(",", ":"))[:4096])
    dist.barrier()
    return summary
