"""The four task formats and the multi-task sampler, in process (no trainer launch)."""

import collections

import pytest
import torch

from stilts_trainer import backbones, data, formats, model, sampling, synthetic, tasks
from stilts_trainer.formats import span, tagging
from stilts_trainer.job import Hyperparameters


@pytest.fixture(scope="module")
def tokenizer():
    return model.train_tokenizer(synthetic.mlm_corpus(0, 200), vocab_size=1500)


def encoded(name, split, tokenizer, n=200, max_length=64, doc_stride=16):
    task = tasks.get(name)
    examples = data.load_examples(name, split, "synthetic", 1, limit=n)
    labels = tagging.tag_set(examples) if task.format == "tagging" else task.labels
    hp = Hyperparameters(max_seq_length=max_length, doc_stride=doc_stride)
    return examples, data.encode(task, examples, tokenizer, max_length, labels, hp), labels


def oracle(features):
    """Span predictions that put all weight on the gold positions (<s> for no answer)."""
    return [([(f["start_position"], 10.0)], [(f["end_position"], 10.0)], 30.0 if f["start_position"] == 0 else -30.0)
            for f in features]


def test_max_context_picks_the_window_where_a_token_is_most_central():
    # Two windows over tokens 0..5 of a context: [0 1 2 3] and [2 3 4 5]; None marks question tokens.
    first, second = [None, 0, 1, 2, 3], [None, 2, 3, 4, 5]
    a, b = span.max_context([first, second])
    assert a == [False, True, True, True, False]   # token 3 is at the edge of the first window
    assert b == [False, False, True, True, True]   # and central in the second
    assert not (a[3] and b[1]), "token 2 belongs to one window only"


@pytest.mark.parametrize("name", ["squad", "squad_v2"])
def test_long_contexts_make_overlapping_windows_that_keep_every_answer(name, tokenizer):
    examples, long_windows, _ = encoded(name, "dev", tokenizer, max_length=40, doc_stride=8)
    _, whole, _ = encoded(name, "dev", tokenizer, max_length=128)
    assert len(long_windows) > 1.5 * len(examples) and len(whole) < 1.05 * len(examples)
    for feature in long_windows:  # gold positions decode to the answer text
        if feature["start_position"]:
            example = examples[feature["example"]]
            got = example["context"][feature["offsets"][feature["start_position"]][0]:
                                     feature["offsets"][feature["end_position"]][1]].strip()
            assert got == example["answers"][0][0]
    assert span.score(examples, whole, oracle(whole)) == {"exact_match": 1.0, "f1": 1.0}
    assert span.score(examples, long_windows, oracle(long_windows))["exact_match"] > 0.95


def test_squad_v2_answers_nothing_when_the_null_score_wins(tokenizer):
    examples, features, _ = encoded("squad_v2", "dev", tokenizer, max_length=128)
    unanswerable = sum(not e["answers"] for e in examples) / len(examples)
    assert 0.2 < unanswerable < 0.5
    first_word = [next(p for p, o in enumerate(f["offsets"]) if o is not None) for f in features]
    always_null = [([(p + 1, 1.0)], [(p + 1, 1.0)], 100.0) for p in first_word]  # a noun, not "the"
    assert span.score(examples, features, always_null)["exact_match"] == pytest.approx(unanswerable)
    v1 = [{**e, "version2": False} for e in examples]  # v1.1 never abstains
    assert span.score(v1, features, always_null)["exact_match"] < unanswerable


def test_squad_metrics_follow_the_official_normalisation():
    assert span.normalize("The  Cat, sat!") == "cat sat"
    assert span.f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert span.f1("", "") == 1.0 and span.f1("cat", "") == 0.0


def test_tagging_predicts_at_word_starts_and_counts_unseen_and_cut_words_wrong(tokenizer):
    examples = [{"tokens": ["the", "cleverest", "dog"], "tags": ["NP/N", "N/N", "N"]},
                {"tokens": ["the", "cat"], "tags": ["NP/N", "NEW"]}]
    labels = ("N", "N/N", "NP/N")
    features = tagging.encode(examples, tokenizer, 64, labels)
    targets = [[t for t in f["labels"] if t != formats.IGNORE] for f in features]
    assert targets == [[2, 1, 0], [2, tagging.UNSEEN]]
    assert len(features[0]["labels"]) == len(features[0]["input_ids"])
    batch = tagging.collate(features, tokenizer.pad_token_id)
    perfect = torch.zeros(*batch["labels"].shape, 3)
    for row, col in (batch["labels"] >= 0).nonzero().tolist():
        perfect[row, col, batch["labels"][row, col]] = 1
    assert tagging.score(examples, features, tagging.predict(perfect, batch)) == {"tag_accuracy": 4 / 5}
    cut = tagging.encode(examples[:1], tokenizer, 4, labels)  # <s> + 2 sub-words + </s>: "dog" is cut
    assert tagging.score(examples[:1], cut, [[(2, 2)]])["tag_accuracy"] == pytest.approx(1 / 3)


def test_multiple_choice_batches_are_examples_by_choices_by_tokens(tokenizer):
    _, features, labels = encoded("commonsenseqa", "train", tokenizer, n=6)
    batch = formats.get("multiple_choice").collate(features, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[:2] == (6, 5) and batch["labels"].shape == (6,)
    grown = data.pad_batch(batch, (8, 5, batch["input_ids"].shape[-1] + 3), tokenizer.pad_token_id)
    assert grown["input_ids"].shape == (8, 5, batch["input_ids"].shape[-1] + 3)
    assert grown["labels"].tolist()[-2:] == [-100, -100] and grown["attention_mask"][6:].sum() == 0


def test_mix_weights_are_proportional_capped_and_flattened_by_temperature():
    sizes = {"big": 400_000, "mid": 40_000, "small": 10_000}
    p = sampling.mix_weights(sizes, temperature=1, cap=0)
    assert p["big"] == pytest.approx(400 / 450)
    p = sampling.mix_weights(sizes, temperature=1, cap=40_000)
    assert p["big"] == p["mid"] == pytest.approx(4 / 9)
    flat = sampling.mix_weights(sizes, temperature=1000, cap=0)
    assert max(flat.values()) - min(flat.values()) < 0.01
    with pytest.raises(ValueError, match="multitaskTemperature"):
        sampling.mix_weights(sizes, temperature=0, cap=0)


def test_mixed_stream_is_reproducible_shared_by_ranks_and_follows_the_weights():
    features = {"a": [{}] * 400, "b": [{}] * 100}
    training = sampling.TrainingSet(features, {"a": None, "b": None}, {"a": 0.8, "b": 0.2})
    sched = data.schedule(training.epoch_size, 8, 4, 2)
    streams = [sampling.Stream(training, sched, seed=3, total_micro=2000) for _ in range(2)]
    draws = [[streams[r].at(m, r) for m in range(2000)] for r in range(2)]
    assert [t for t, _ in draws[0]] == [t for t, _ in draws[1]], "every rank trains the same head"
    assert all(not set(i0) & set(i1) for (_, i0), (_, i1) in zip(*draws)), "ranks see different examples"
    counts = collections.Counter(t for t, _ in draws[0])
    assert 0.75 < counts["a"] / 2000 < 0.85
    again = sampling.Stream(training, sched, seed=3, total_micro=2000)
    assert [again.at(m, 0) for m in (1999, 7, 500)] == [draws[0][m] for m in (1999, 7, 500)], "resume = replay"
    first_epoch_of_b = [i for t, idx in draws[0][:200] if t == "b" for i in idx][:48]
    assert len(set(first_epoch_of_b)) == len(first_epoch_of_b), "a task walks its own epochs without repeats"


def test_every_head_learns_on_a_shared_encoder(pretrained):
    """All nine multitask heads on one pretrained encoder, trained on a few fixed batches each: every
    head's loss falls."""
    torch.manual_seed(0)
    tokenizer = model.load_tokenizer(str(pretrained / "model"))
    encoder = backbones.dense.encoder(str(pretrained / "model"), None, 1)
    members = tasks.get("multitask").members
    batches, heads = {}, []
    for name in members:
        task = tasks.get(name)
        _, features, labels = encoded(name, "train", tokenizer, n=16, max_length=64)
        batches[name] = [formats.get(task.format).collate(features[:16], tokenizer.pad_token_id)]
        heads.append(model.HeadSpec(name, task.format, labels))
    net = model.TaskModel(encoder, heads)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def losses():
        net.eval()
        with torch.no_grad():
            out = {n: sum(net(**b, task=n)["loss"].item() for b in bs) / len(bs) for n, bs in batches.items()}
        net.train()
        return out

    before = losses()
    for _ in range(50):
        for name, bs in batches.items():
            for b in bs:
                optimizer.zero_grad()
                net(**b, task=name)["loss"].backward()
                optimizer.step()
    after = losses()
    for name in members:
        assert after[name] < 0.8 * before[name], (name, before[name], after[name])


def test_a_parent_without_heads_is_bad_input_naming_the_parent(tmp_path):
    """A directory with no heads.json (stilts 0.1 wrote head.pt; current plans never reuse those jobs) is
    refused as bad input that names the parent, not retried."""
    from stilts_trainer.job import JobError

    directory = tmp_path / "target" / "model"
    directory.mkdir(parents=True)
    (directory / "head.pt").write_bytes(b"")
    with pytest.raises(JobError, match="parent: .* has no task heads"):
        model.load_heads(str(directory))
