"""The tokenize-once cache (trainer/stilts_trainer/feature_cache.py): what a rank maps from the volume
is what it would have encoded itself, for every format; one writer per fingerprint."""

import json

import pytest

from stilts_trainer import data, feature_cache, formats, model, synthetic, tasks
from stilts_trainer.formats import tagging
from stilts_trainer.job import Hyperparameters


@pytest.fixture(scope="module")
def tokenizer():
    return model.train_tokenizer(synthetic.mlm_corpus(0, 200), vocab_size=800)


@pytest.mark.parametrize("name", ["mnli", "hellaswag", "squad", "ccg"])
def test_mapped_features_equal_encoded_ones_and_collate_alike(tmp_path, tokenizer, name):
    task = tasks.get(name)
    examples = data.load_examples(name, "train", "synthetic", 1, limit=300)
    labels = tagging.tag_set(examples) if task.format == tagging.NAME else task.labels
    hp = Hyperparameters()
    encoded = data.encode(task, examples, tokenizer, 64, labels, hp)
    feature_cache.write(tmp_path / "entry", encoded, {"examples": len(examples), "labels": list(labels)})
    mapped = feature_cache.Features(tmp_path / "entry")
    assert len(mapped) == len(encoded) and mapped.meta["examples"] == len(examples)
    kept = set(mapped.meta["columns"])
    assert "input_ids" in kept
    for i in (0, 7, len(encoded) - 1, -1):
        assert mapped[i] == {k: v for k, v in encoded[i].items() if k in kept}
    fmt = formats.get(task.format)
    batch_a = fmt.collate([encoded[i] for i in (3, 1, 4)], tokenizer.pad_token_id)
    batch_b = fmt.collate([mapped[i] for i in (3, 1, 4)], tokenizer.pad_token_id)
    assert batch_a.keys() == batch_b.keys() and all((batch_a[k] == batch_b[k]).all() for k in batch_a)
    with pytest.raises(IndexError):
        mapped[len(encoded)]
    # Length grouping reads lengths from the offsets; they must be the collated lengths.
    assert list(data.padded_lengths(mapped)) == data.padded_lengths(encoded)
    assert max(data.padded_lengths([encoded[i] for i in (3, 1, 4)])) == batch_a["input_ids"].shape[-1]


def test_one_build_per_fingerprint_and_a_second_writer_keeps_the_first(tmp_path, monkeypatch):
    built = []

    def build():
        built.append(1)
        return [{"input_ids": [5, 6, len(built)], "label": 1}], {"examples": 1, "labels": ["a", "b"]}

    key = {"task": "mnli", "tokenizer": "t1", "length": 64}
    first, meta = feature_cache.load_or_build(str(tmp_path), key, build, True, lambda: None)
    again, _ = feature_cache.load_or_build(str(tmp_path), key, build, True, lambda: None)
    assert len(built) == 1 and again[0] == first[0] == {"input_ids": [5, 6, 1], "label": 1}
    assert meta["labels"] == ["a", "b"]
    other, _ = feature_cache.load_or_build(str(tmp_path), {**key, "tokenizer": "t2"}, build, True, lambda: None)
    assert len(built) == 2 and other[0]["input_ids"] == [5, 6, 2]
    # A writer that lost the race (the entry appeared meanwhile) leaves the winner's entry as it was.
    entry = tmp_path / feature_cache.DIRECTORY / feature_cache.fingerprint(key)
    feature_cache.write(entry, [{"input_ids": [9], "label": 0}], {"examples": 1, "labels": []})
    assert feature_cache.Features(entry)[0]["input_ids"] == [5, 6, 1]
    assert [p.name for p in entry.parent.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setenv("STILTS_FEATURE_CACHE", "off")
    in_memory, _ = feature_cache.load_or_build(str(tmp_path), key, build, True, lambda: None)
    assert isinstance(in_memory, list) and len(built) == 3


def test_the_fingerprint_covers_what_makes_the_features(tokenizer):
    base = {"task": "mnli", "tokenizer": feature_cache.tokenizer_fingerprint(tokenizer), "length": 64}
    other_tokenizer = model.train_tokenizer(synthetic.mlm_corpus(1, 100), vocab_size=500)
    assert feature_cache.fingerprint(base) == feature_cache.fingerprint(json.loads(json.dumps(base)))
    for change in ({"length": 128}, {"task": "qqp"},
                   {"tokenizer": feature_cache.tokenizer_fingerprint(other_tokenizer)}):
        assert feature_cache.fingerprint({**base, **change}) != feature_cache.fingerprint(base)
