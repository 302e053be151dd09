"""The five phases. Each reads its job, its parent's `model/`, and writes its own output directory;
`run` writes `COMPLETE` last."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from stilts_contract import items, summary as summaries
from stilts_contract.names import COMPLETE, EVENTS_DIR, TINY_MODELS

from . import (backbones, data, diagnostics, engine, feature_cache, formats, model, sampling, synthetic, tasks,
               tracking)
from .formats import tagging
from .sampling import TrainingSet
from .checkpoint import is_complete, mark_complete, write_json_atomic, write_termination_message
from .job import Job, JobError, MlmMix, dump
from .metrics import TrainerMetrics

log = logging.getLogger("stilts_trainer")

SYNTHETIC_CORPUS_PER_LANGUAGE = 1500
# Per-language masked-LM text for continued pretraining: the ablation's default corpus, defined once.
HUB_CORPUS = (MlmMix().corpus, MlmMix().corpus_config, MlmMix().text_field)


# Routers draw from a stream of their own, apart from every seed's heads (which use the seed itself).
ROUTER_STREAM = 2**32


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
    return TrainerMetrics(labels, job.metrics_port, events=Path(job.output) / EVENTS_DIR, tracker=_tracker(job, ctx))


def _save(module, tokenizer, directory: Path, job: Job, ctx: engine.Context) -> None:
    engine.save_collective(ctx, directory,
                           lambda tmp: model.save_model(module, tokenizer, tmp, job.backbone, ctx.is_main))


def prefetch(job: Job, ctx: engine.Context) -> dict:
    """Fill the shared Hugging Face cache once, so training pods never reach the hubs."""
    fetched = []
    if job.data_source == "synthetic":
        return {"fetched": fetched}
    tracker = _tracker(job, ctx)
    if ctx.is_main:
        for model_id in job.prefetch.models:
            if model_id in TINY_MODELS:
                continue
            model.load_tokenizer(model.hub_path(model_id, job.mirror))
            backbones.dense.mlm(model.hub_path(model_id, job.mirror), None, 1)
            fetched.append(model_id)
        for name in tasks.expand(job.prefetch.tasks):
            task = tasks.get(name)
            for split in task.splits:
                for language in task.languages:
                    data.load_examples(name, split, "hub", 0, language, job.mirror, job.cache_dir,
                                       data_dir=job.data_dir)  # hub data has no seed
            fetched.append(name)
        track(tracker, {"prefetch/fetched": len(fetched)})
    dist.barrier()
    return {"fetched": fetched}


def _corpus(job: Job, languages=synthetic.XNLI_LANGUAGES, per_language: int = 0,
            source: tuple[str, str, str] = HUB_CORPUS) -> list[str]:
    """Multilingual masked-LM text: `per_language` lines of each language (0: the phase's
    maxTrainExamples, or 10,000)."""
    if job.data_source == "synthetic":
        return synthetic.mlm_corpus(0, per_language or SYNTHETIC_CORPUS_PER_LANGUAGE, languages)
    import datasets

    per_language = per_language or job.hyperparameters.max_train_examples or 10000
    lines = []
    dataset, config, text_field = source
    for lang in languages:
        stream = datasets.load_dataset(data.hub_dataset_path(dataset, job.mirror), config.format(lang=lang),
                                       split="train", streaming=True, cache_dir=job.cache_dir or None)
        lines.extend(row[text_field] for row, _ in zip(stream, range(per_language)))
    return lines


def masked_lm_part(corpus: list[str], tokenizer, max_seq_length: int, probability: float) -> tuple[list, dict]:
    """A corpus as a training part: packed token sequences, their collate and their masking."""
    lines = tokenizer(corpus, truncation=True, max_length=max_seq_length)["input_ids"]
    items = [{"input_ids": ids} for ids in data.pack(lines, max_seq_length)]
    return items, {"collate": data.collate_tokens,
                   "transform": lambda b, g: data.mask_tokens(b, tokenizer, probability, g)}


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
            raise JobError("backbone.architecture: a tiny model is built dense; upcycle it in a later job "
                             "(give this job's output as parent)")
        torch.manual_seed(job.seed)
        mlm = model.tiny_mlm(job.backbone.model, tokenizer)
    hp = job.hyperparameters
    items, part = masked_lm_part(corpus, tokenizer, hp.max_seq_length, hp.mlm_probability)
    module = model.MaskedLM(mlm, model.aux_loss(job.backbone))
    metrics = _metrics(job, ctx)
    training = TrainingSet({model.MLM: items}, {model.MLM: part["collate"]},
                           transforms={model.MLM: part["transform"]})
    state = engine.train(job, ctx, module, training, tokenizer.pad_token_id,
                         save_best=lambda m: _save(m, tokenizer, out / "model", job, ctx), metrics=metrics)
    if metrics:
        metrics.close()
    result = {"steps": state.step, "paddingShare": state.padding_share}
    if job.data_source == "synthetic":  # the offline world has a dictionary to check alignment against
        scores = diagnostics.word_alignment(model.encoder_of(module).roberta, tokenizer, synthetic.XNLI_LANGUAGES,
                                            ctx.device)
        result.update(alignment=round(sum(scores.values()) / len(scores), 4), alignmentByLanguage=scores)
        if ctx.is_main:
            log.info("word-translation retrieval (chance ~0.01): %.3f %s", result["alignment"], scores)
    return result


@dataclass
class TaskData:
    """One task's encoded training set, its English dev set, and the dev subset used for selection."""
    task: tasks.Task
    labels: tuple[str, ...]
    train_examples: int          # what sampling weighs (a long SQuAD context makes several features)
    train: Sequence[dict]       # in memory, or mapped from the feature cache
    dev_examples: list[dict]
    dev: list[dict]
    subset_examples: list[dict]
    subset: list[dict]

    @property
    def format(self):
        return formats.get(self.task.format)


def task_data(name: str, job: Job, tokenizer, ctx: engine.Context | None = None) -> TaskData:
    """A task's data for one phase. The training set is encoded once per experiment and mapped from the
    shared cache (feature_cache.py) when the job has a cacheDir; dev sets are small and stay in memory."""
    task, hp = tasks.get(name), job.hyperparameters

    def load(split: str, limit: int = 0) -> list[dict]:
        return data.load_examples(name, split, job.data_source, job.seed, "en", job.mirror, job.cache_dir, limit,
                                  job.data_dir)

    # SQuAD keeps its own length (jiant's XTREME setting: 384), whatever the phase's maxSeqLength.
    length = hp.span_max_seq_length if task.format == "span" else hp.max_seq_length

    def encode(examples: list[dict], labels: tuple[str, ...]) -> list[dict]:
        return data.encode(task, examples, tokenizer, length, labels, hp)

    def build_train() -> tuple[list[dict], dict]:
        examples = load("train", hp.max_train_examples)
        labels = tagging.tag_set(examples) if task.format == tagging.NAME else task.labels
        return encode(examples, labels), {"examples": len(examples), "labels": list(labels)}

    synthetic_data = job.data_source == "synthetic"
    key = {"task": name, "format": task.format, "labels": list(task.labels), "dataSource": job.data_source,
           "seed": job.seed if synthetic_data else None,
           "world": job.synthetic_world if synthetic_data else None,
           "source": "" if synthetic_data else (job.data_dir if task.local else
                                               [repr(s) for s in task.hub.get("train", ())]),
           "mirror": job.mirror, "limit": hp.max_train_examples, "length": length, "docStride": hp.doc_stride,
           "tokenizer": feature_cache.tokenizer_fingerprint(tokenizer)}
    train, meta = feature_cache.load_or_build(job.cache_dir, key, build_train, ctx is None or ctx.is_main,
                                              dist.barrier if ctx is not None else (lambda: None))
    labels = tuple(meta["labels"])
    dev = load("dev")
    subset = selection_subset(name, dev, hp.eval_examples)
    return TaskData(task, labels, meta["examples"], train, dev, encode(dev, labels), subset, encode(subset, labels))


def selection_subset(task: str, dev: list[dict], size: int) -> list[dict]:
    """The English dev examples model selection scores: drawn across the whole dev set with a fixed seed
    (the first rows of ANLI+ are round 1 only, of SQuAD one article), the same for every run. Zero-shot:
    never a target-language dev set."""
    if size >= len(dev):
        return dev
    picked = sorted(random.Random(f"selection-{task}").sample(range(len(dev)), size))
    return [dev[i] for i in picked]


def score(module, td: TaskData, full: bool, job: Job, ctx: engine.Context, pad_id: int) -> dict:
    examples, features = (td.dev_examples, td.dev) if full else (td.subset_examples, td.subset)
    predictions = engine.predict(module, td.format, features, job.hyperparameters.micro_batch_size * 8, pad_id, ctx,
                                 task=td.task.name)
    return td.format.score(examples, features, predictions)


def _task_module(job: Job, source: str, members: dict[str, TaskData], ctx: engine.Context) -> model.TaskModel:
    """The inherited encoder (keeping its masked-LM head when MLM batches are mixed in) with one head per
    member task, the bottom layers frozen."""
    torch.manual_seed(ROUTER_STREAM + job.seed)  # an upcycled MoE's routers
    heads = [model.HeadSpec(name, td.task.format, td.labels) for name, td in members.items()]
    lm_head = None
    if job.mlm_mix:  # tied to the embeddings, so the mixed-in batches train what the tasks read
        mlm = model.build_mlm(source, job.backbone, ctx.world)
        encoder, lm_head = mlm.roberta, mlm.lm_head
    else:
        encoder = model.build_encoder(source, job.backbone, ctx.world)
    model.freeze_bottom(encoder, job.hyperparameters.frozen_layers)
    # The heads are drawn from the seed alone, after whatever the backbone drew, so every arm of a seed
    # starts with the same head (and, from the engine, the same batches): common random numbers. A freshly
    # upcycled top-2 MoE computes the dense function, so its run then tracks the dense run of its seed and
    # the paired moe-vs-dense contrast loses most of the seed noise (docs/statistics.md).
    torch.manual_seed(job.seed)
    return model.TaskModel(encoder, heads, model.aux_loss(job.backbone), lm_head=lm_head)


def _training_set(job: Job, members: dict[str, TaskData], tokenizer, multitask: bool) -> TrainingSet:
    """Batches sampled across the member tasks (temperature-scaled for a multitask job), with the
    masked-LM share of `mlmMix` taken off the top."""
    hp, mix = job.hyperparameters, job.mlm_mix
    weights = None
    if multitask:
        weights = sampling.mix_weights({n: td.train_examples for n, td in members.items()}, hp.multitask_temperature,
                                       hp.multitask_cap)
    training = TrainingSet({n: td.train for n, td in members.items()},
                           {n: td.format.collate for n, td in members.items()}, weights,
                           hp.multitask_cap if multitask else 0)
    if not mix:
        return training
    corpus = _corpus(job, mix.languages, mix.examples_per_language, (mix.corpus, mix.corpus_config, mix.text_field))
    items, part = masked_lm_part(corpus, tokenizer, hp.max_seq_length, mix.mlm_probability)
    own = training.weights or {name: 1.0 for name in members}
    return TrainingSet({**training.features, model.MLM: items}, {**training.collate, model.MLM: part["collate"]},
                       {**{n: w * (1 - mix.weight) for n, w in own.items()}, model.MLM: mix.weight},
                       training.cap, transforms={model.MLM: part["transform"]}, mixed_in=(model.MLM,))


def finetune(job: Job, ctx: engine.Context) -> dict:
    """`intermediate` and `target`: task heads on the inherited encoder, selected on English dev.
    `multitask` trains one head per member task on batches sampled across them."""
    task = tasks.get(job.task)
    out = Path(job.output)
    source = model_source(job)
    tokenizer = model.load_tokenizer(source)
    pad_id = tokenizer.pad_token_id
    started = time.perf_counter()
    members = {name: task_data(name, job, tokenizer, ctx) for name in (task.members or (task.name,))}
    data_seconds = round(time.perf_counter() - started, 2)
    if ctx.is_main:
        log.info("training data ready in %.1f s (%s)", data_seconds,
                 ", ".join(f"{n}: {len(td.train)} features" for n, td in members.items()))
    module = _task_module(job, source, members, ctx)
    training = _training_set(job, members, tokenizer, bool(task.members))
    if training.weights and ctx.is_main:
        log.info("sampling: %s", {n: round(w, 4) for n, w in training.weights.items()})

    def main_score(m, full: bool) -> tuple[float, dict]:
        scores = {n: score(m, td, full, job, ctx, pad_id) for n, td in members.items()}
        return sum(scores[n][td.format.MAIN] for n, td in members.items()) / len(members), scores

    metrics = _metrics(job, ctx)
    state = engine.train(job, ctx, module, training, pad_id,
                         save_best=lambda m: _save(m, tokenizer, out / "model", job, ctx),
                         evaluator=lambda m: main_score(m, full=False)[0], metrics=metrics)
    # Report the selected model on the whole English dev set of every task it trained.
    best = model.load_task_model(str(out / "model"), job.backbone, ctx.world).to(ctx.device)
    dev_score, dev = main_score(best, full=True)
    dev = {n: {k: round(v, 4) for k, v in d.items()} for n, d in dev.items()}
    if ctx.is_main:
        log.info("English dev, selected model (step %d): %s", state.best_step, dev)
        if metrics:
            metrics.dev_score(dev_score, selected=True)
            metrics.close()
    return {"steps": state.step, "bestStep": state.best_step, "stoppedEarly": state.stopped_early,
            "devScore": round(dev_score, 4), "dev": dev, "history": state.history, "lossCurve": state.loss_curve,
            "dataSeconds": data_seconds, "paddingShare": state.padding_share}


def evaluate(job: Job, ctx: engine.Context) -> dict:
    """Zero-shot accuracy of the target model on every language, dev and test."""
    task = tasks.get(job.task)
    fmt = formats.get(task.format)
    hp = job.hyperparameters
    tracker = _tracker(job, ctx)
    source = model_source(job)
    tokenizer = model.load_tokenizer(source)
    module = model.load_task_model(source, job.backbone, ctx.world).to(ctx.device)
    if len(module.specs) != 1:
        raise JobError(f"parent: {Path(source).parent} has heads {list(module.specs)}; evaluate needs the output "
                         "of a target job (one classifier)")
    (head,) = module.specs.values()
    if (head.format, head.labels) != (task.format, task.labels):
        raise JobError(f"task: the parent's {head.task} head predicts {head.labels}, {task.name} needs {task.labels}")
    per_language, predicted, correct = {}, {}, {}
    started = time.perf_counter()
    for language in job.languages:
        per_language[language] = {}
        for split in ("dev", "test"):
            examples = data.load_examples(task.name, split, job.data_source, job.seed, language, job.mirror,
                                          job.cache_dir)
            features = data.encode(task, examples, tokenizer, hp.max_seq_length, task.labels, hp)
            predictions = engine.predict(module, fmt, features, hp.micro_batch_size * 8, tokenizer.pad_token_id,
                                         ctx, task=head.task)
            per_language[language][split] = round(fmt.score(examples, features, predictions)[fmt.MAIN], 4)
            if split == "test":
                # What the report needs beyond accuracy: how predictions spread over the labels (a constant
                # predictor shows as one share near 1), and which items were right (bootstrap over items).
                predicted[language] = [round(predictions.count(k) / max(1, len(predictions)), 4)
                                       for k in range(len(task.labels))]
                correct[language] = "".join("1" if p == f["label"] else "0" for p, f in zip(predictions, features))
    average = {split: round(sum(v[split] for v in per_language.values()) / len(per_language), 4)
               for split in ("dev", "test")}
    results = {"task": task.name, "backbone": job.backbone.name, "seed": job.seed, "languages": per_language,
               "average": average, "labels": list(task.labels), "predicted": predicted, "correct": correct,
               "seconds": round(time.perf_counter() - started, 2)}
    if ctx.is_main:
        write_json_atomic(Path(job.output) / "results.json", results)
        track(tracker, {f"{job.task}/{split}/{language}": accuracy
                        for language, splits in {**per_language, "avg": average}.items()
                        for split, accuracy in splits.items()})
    # testItems and itemsDigest: a cluster report gets the items from the log lines print_items writes,
    # checked against this digest (stilts_contract.items).
    return {"average": average, "test": {k: v["test"] for k, v in per_language.items()}, "predicted": predicted,
            "testItems": min(len(c) for c in correct.values()), "itemsDigest": items.digest(items.encode(correct))}


def _tracker(job: Job, ctx: engine.Context) -> tracking.Tracker | None:
    """The job's MLflow tracker on rank 0, made at the phase's start: its thread imports MLflow and finds
    the run while the phase works, so the phase's end has only the figures to send."""
    return tracking.for_job(dump(job)) if ctx.is_main else None


def track(tracker: tracking.Tracker | None, figures: dict[str, float]) -> None:
    """A phase without a training loop (evaluate: accuracy per language and split, xnli/test/de;
    prefetch) still gets its MLflow run, with its figures at step 0."""
    if tracker is None:
        return
    for key, value in figures.items():
        tracker.add(key, value, 0)
    tracker.close()


def print_items(job: Job, out: Path) -> None:
    """An evaluate job's per-item results as the last lines of its log, where the operator reads them."""
    results = out / "results.json"
    if job.phase == "evaluate" and results.is_file():
        correct = json.loads(results.read_text()).get("correct") or {}
        print("\n".join(items.lines(job.job_hash, correct)), flush=True)


PHASES = {"prefetch": prefetch, "pretrain": pretrain, "intermediate": finetune, "target": finetune,
          "evaluate": evaluate}
# metrics.json only: the run's own diagnostics, not results (the COMPLETE summary leaves them out)
DIAGNOSTICS = ("history", "lossCurve", "alignmentByLanguage", "dataSeconds", "paddingShare")


def run(job: Job) -> dict:
    """Run one job to its COMPLETE marker. A finished job is not run again: it re-emits its summary
    (a rerun on a cluster must still tell the operator what it found)."""
    out = Path(job.output)
    if is_complete(out):
        summary = json.loads((out / COMPLETE).read_text())
        log.info("%s already complete", out)
        if int(os.environ.get("RANK", "0")) == 0:
            write_termination_message(summaries.encode(summary))
            print_items(job, out)
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
               **{k: v for k, v in result.items() if k not in DIAGNOSTICS}}
    dist.barrier()
    if ctx.is_main:
        write_json_atomic(out / "metrics.json", result)
        mark_complete(out, summary)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only a finished job's output is ever read
        write_termination_message(summaries.encode(summary))
        print_items(job, out)
    dist.barrier()
    return summary
