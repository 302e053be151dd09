import contextlib
import random

import pytest
import torch

from stilts_trainer import data, formats, synthetic, tasks


def test_schedule_and_accumulation():
    s = data.schedule(1000, 32, 4, 2)
    assert s.accumulation == 4 and s.micro_batches_per_epoch % 4 == 0 and s.steps_per_epoch == 31
    with pytest.raises(ValueError, match="batchSize"):
        data.schedule(1000, 30, 4, 2)
    with pytest.raises(ValueError, match="larger than the training set"):
        data.schedule(10, 32, 4, 2)


def test_epoch_batches_partition_the_data_across_ranks_and_repeat_on_restart():
    s = data.schedule(100, 8, 2, 2)
    ranks = [data.epoch_batches(100, s, seed=1, epoch=0, rank=r) for r in range(2)]
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen)) == s.micro_batches_per_epoch * 4
    assert ranks[0] == data.epoch_batches(100, s, seed=1, epoch=0, rank=0)
    assert ranks[0] != data.epoch_batches(100, s, seed=1, epoch=1, rank=0)


def test_length_grouped_epochs_hold_the_same_examples_with_little_padding_in_random_order():
    rng = random.Random(0)
    lengths = [rng.randint(8, 200) for _ in range(20_000)]
    s = data.schedule(len(lengths), 32, 8, 2)

    def epoch(grouped: bool, epoch: int = 0) -> list[list[list[int]]]:
        return [data.epoch_batches(len(lengths), s, 1, epoch, r, lengths if grouped else None) for r in range(2)]

    def padding(ranks) -> float:  # share of padded positions, each rank padding its own micro-batch
        cells = [(max(lengths[i] for i in b) * len(b), sum(lengths[i] for i in b)) for r in ranks for b in r]
        return 1 - sum(real for _, real in cells) / sum(padded for padded, _ in cells)

    plain, grouped = epoch(False), epoch(True)
    assert sorted(i for r in grouped for b in r for i in b) == sorted(i for r in plain for b in r for i in b)
    assert all(len(b) == 8 for r in grouped for b in r) and len(grouped[0]) == len(plain[0])
    assert padding(plain) > 0.3 and padding(grouped) < 0.05
    assert grouped == epoch(True) and grouped != epoch(True, epoch=1), "a pure function of seed and epoch"
    # Batch order does not follow length: long and short batches alternate through the epoch.
    means = [sum(lengths[i] for i in b) / len(b) for b in grouped[0]]
    rises = sum(a < b for a, b in zip(means, means[1:])) / (len(means) - 1)
    assert 0.35 < rises < 0.65


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (10, 3), (33, 4)])
def test_eval_batches_give_every_rank_the_same_number_of_passes(n, world):
    lengths = [((i * 37) % 50) + 1 for i in range(n)]
    per_rank = [data.eval_batches(lengths, 4, r, world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    covered = sorted(i for r in per_rank for b in r for i in b)
    assert covered == list(range(n))
    for batches in per_rank:  # length-sorted: padding stays small
        for b in batches:
            if b:
                assert max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 50


def test_collate_pads_to_the_longest_in_the_batch():
    batch = formats.get("classification").collate([{"input_ids": [5, 6, 7], "label": 1}, {"input_ids": [5], "label": 0}], pad_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_mask_tokens_never_masks_padding_or_specials():
    class Tok:
        all_special_ids = [0, 1, 2]
        mask_token_id = 4
        def __len__(self):
            return 100
    ids = torch.tensor([[0, 10, 11, 12, 13, 2, 1, 1]] * 64)
    mask = (ids != 1).long()
    out = data.mask_tokens({"input_ids": ids, "attention_mask": mask}, Tok(), 0.5, torch.Generator().manual_seed(0))
    chosen = out["labels"] != -100
    assert not chosen[:, [0, 5, 6, 7]].any()
    assert 0.3 < chosen[:, 1:5].float().mean() < 0.7
    assert (out["input_ids"][chosen] == 4).float().mean() > 0.6


def write_hub_layout(mirror, dataset_id, splits_by_config: dict[str, dict[str, list[dict]]]):
    """A mirror root holding a dataset in the hub's own layout: <mirror>/datasets/<id>/<config>/<split>-*.parquet
    with the README `configs` block the hub uses to map files to configs and splits."""
    import datasets
    root = mirror / "datasets" / dataset_id
    lines = ["---", "configs:"]
    for config, splits in splits_by_config.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            datasets.Dataset.from_list(rows).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))


def test_hub_loader_reads_a_mirror_in_hub_layout_with_the_same_conversion(tmp_path):
    rows = synthetic.nli_examples(5, 40)
    rows_with_unlabelled = rows + [{"premise": "a", "hypothesis": "b", "label": -1}]
    write_hub_layout(tmp_path, "nyu-mll/glue", {"mnli": {"train": rows_with_unlabelled,
                                                         "validation_matched": rows[:10]}})
    got = data.load_examples("mnli", "train", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert len(got) == 40, "the unlabelled row is dropped"
    assert got[0] == {"text_a": rows[0]["premise"], "text_b": rows[0]["hypothesis"], "label": rows[0]["label"]}
    assert len(data.load_examples("mnli", "dev", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "c"))) == 10


def test_hub_dataset_with_the_wrong_schema_fails_naming_the_field(tmp_path):
    rows = [{"sentence1": "a", "sentence2": "b", "label": 0}]
    write_hub_layout(tmp_path, "nyu-mll/glue", {"qqp": {"train": rows}})
    with pytest.raises(data.DataError, match="lacks field 'question1'"):
        data.load_examples("qqp", "train", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "cache"))


@contextlib.contextmanager
def variant(name: str, records: list[dict]):
    """Task `name` serving `records` as its synthetic data for a moment."""
    import dataclasses
    task = tasks.get(name)
    tasks.register(dataclasses.replace(task, synthetic=lambda *_: records))
    try:
        yield name
    finally:
        tasks.register(task)


def test_out_of_range_label_is_refused():
    with variant("qqp", [{"question1": "a", "question2": "b", "label": 7}]) as bad:
        with pytest.raises(data.DataError, match="field label is 7"):
            data.load_examples(bad, "train", "synthetic", 1)


def test_every_task_has_synthetic_data_in_its_hub_schema():
    for name in tasks.names():
        task = tasks.get(name)
        assert task.members or task.splits, name
        for split in task.splits:
            records = task.synthetic(split, 1, task.languages[0])
            assert records and all(f in records[0] for f in task.fields), (name, split)


def test_squad_answer_offsets_that_miss_the_context_are_refused(tmp_path):
    rows = tasks.get("squad").synthetic("train", 1, "en")[:5]
    rows[3] = {**rows[3], "answers": {"text": ["nowhere"], "answer_start": [2]}}
    write_hub_layout(tmp_path, "rajpurkar/squad", {"plain_text": {"train": rows}})
    with pytest.raises(data.DataError, match=r"record 3: field answers: answer_start 2 does not point at 'nowhere'"):
        data.load_examples("squad", "train", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "c"))


def test_multiple_choice_with_the_wrong_number_of_choices_is_refused(tmp_path):
    rows = tasks.get("commonsenseqa").synthetic("train", 1, "en")[:4]
    rows[1] = {**rows[1], "choices": {"label": ["A", "B", "C", "D"], "text": ["a", "b", "c", "d"]}, "answerKey": "A"}
    write_hub_layout(tmp_path, "tau/commonsense_qa", {"default": {"train": rows}})
    with pytest.raises(data.DataError, match="record 1: field choices: expected 5 strings"):
        data.load_examples("commonsenseqa", "train", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "c"))


def test_hellaswag_without_endings_fails_naming_the_field(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "endings"} for r in tasks.get("hellaswag").synthetic("dev", 1, "en")[:3]]
    write_hub_layout(tmp_path, "Rowan/hellaswag", {"default": {"validation": rows}})
    with pytest.raises(data.DataError, match="lacks field 'endings'"):
        data.load_examples("hellaswag", "dev", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "c"))


def test_ccg_reads_a_ccgbank_release_from_data_dir(tmp_path):
    from tests.trainer.ccgbank import write_ccgbank
    records = tasks.get("ccg").synthetic("dev", 1, "en")[:20]
    write_ccgbank(tmp_path, {"dev": records})
    got = data.load_examples("ccg", "dev", "hub", 1, data_dir=str(tmp_path))
    assert got == records
    with pytest.raises(data.DataError, match="dataDir: task ccg: no derivations for the train split"):
        data.load_examples("ccg", "train", "hub", 1, data_dir=str(tmp_path))
    with pytest.raises(data.DataError, match="dataDir: task ccg reads local files"):
        data.load_examples("ccg", "dev", "hub", 1)
    auto = next((tmp_path / "ccgbank" / "data" / "AUTO" / "00").glob("*.auto"))
    auto.write_text("ID=wsj_0001.1 PARSER=GOLD NUMPARSE=1\n(<T S 0 2> broken )\n")
    with pytest.raises(data.DataError, match=r"dataDir: .*wsj_0001.auto: a derivation line without"):
        data.load_examples("ccg", "dev", "hub", 1, data_dir=str(tmp_path))


def test_tagging_records_need_one_tag_per_token():
    with variant("ccg", [{"tokens": ["a", "b", "c"], "tags": ["N", "N"]}]) as bad:
        with pytest.raises(data.DataError, match="field tags: 2 tags for 3 tokens"):
            data.load_examples(bad, "train", "synthetic", 1)


HUB_TASKS = [n for n in tasks.names() if tasks.get(n).hub and len(tasks.get(n).languages) == 1]


@pytest.mark.parametrize("name", HUB_TASKS)
def test_synthetic_records_load_through_the_hub_loader_unchanged(name, tmp_path):
    """Synthetic data is in the hub's schema: written as a hub dataset (parquet, nested features
    and all) and read back by the hub loader, it gives the examples the synthetic source gives."""
    task = tasks.get(name)
    records = task.synthetic("dev", 1, "en")[:30]
    by_dataset: dict = {}
    for source in task.hub["dev"]:
        by_dataset.setdefault(source.dataset, {}).setdefault(source.config or "default", {})[source.split] = records
    for dataset, configs in by_dataset.items():
        write_hub_layout(tmp_path, dataset, configs)
    got = data.load_examples(name, "dev", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    expected = data.load_examples(name, "dev", "synthetic", 1)[:30]
    assert got == expected * len(task.hub["dev"])


def test_cosmosqa_reads_the_hubs_parquet_export_layout(tmp_path):
    """allenai/cosmos_qa ships a loading script (refused by datasets >= 4); the hub's parquet export on
    refs/convert/parquet holds <config>/<split>/NNNN.parquet and no README. A mirror of that branch loads."""
    import datasets
    task = tasks.get("cosmosqa")
    assert all(s.revision == "refs/convert/parquet" for splits in task.hub.values() for s in splits)
    root = tmp_path / "datasets" / "allenai" / "cosmos_qa" / "default"
    for split, rows in (("train", task.synthetic("train", 1, "en")[:30]),
                        ("validation", task.synthetic("dev", 1, "en")[:10])):
        (root / split).mkdir(parents=True)
        datasets.Dataset.from_list(rows).to_parquet(str(root / split / "0000.parquet"))
    got = data.load_examples("cosmosqa", "dev", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert len(got) == 10 and len(got[0]["choices"]) == 4


def test_a_dataset_that_cannot_be_loaded_is_one_line_naming_it(tmp_path):
    with pytest.raises(data.DataError) as info:
        data.load_examples("sst2", "train", "hub", 1, mirror=str(tmp_path), cache_dir=str(tmp_path / "c"))
    line = str(info.value)
    assert "\n" not in line and line.startswith("nyu-mll/glue (sst2, train) could not be loaded:"), line


def test_network_failures_are_worth_retrying_and_missing_data_is_not():
    import requests
    err = RuntimeError("boom")
    err.__cause__ = requests.exceptions.ConnectionError("connection reset")
    assert data._transient(err)
    response = type("R", (), {"status_code": 503})()
    assert data._transient(type("HTTPError", (Exception,), {"response": response})())
    assert not data._transient(FileNotFoundError("no such dataset"))
