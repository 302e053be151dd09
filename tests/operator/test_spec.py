import copy

import pytest
import yaml

from stilts import spec as S
from tests.conftest import REPO

DEMO = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())


def experiment(**spec_changes) -> dict:
    doc = copy.deepcopy(DEMO)
    doc["spec"].update(spec_changes)
    return doc


def error(doc) -> str:
    with pytest.raises(S.SpecError) as info:
        S.parse_experiment(doc, "x.yaml")
    return str(info.value)


def test_examples_parse():
    for path in (REPO / "examples").glob("*.yaml"):
        S.load_experiment(path)


def test_paper_defaults():
    spec = S.parse_spec({"backbones": [{"name": "dense", "model": "FacebookAI/xlm-roberta-large"}]})
    assert spec.intermediate_tasks == list(S.DEFAULT_INTERMEDIATE_TASKS) and spec.baseline
    assert spec.target.languages == list(S.XNLI_LANGUAGES) and spec.seeds is None
    from stilts import answer
    assert answer.seeds(spec) == [1, 2, 3]
    t = spec.training.target
    assert (t.learning_rate, t.batch_size, t.epochs, t.max_seq_length, t.warmup_ratio) == (1e-5, 32, 2, 256, 0.1)
    assert (t.eval_every_steps, t.eval_examples, t.early_stopping_patience) == (1000, 500, 30)
    assert spec.training.intermediate.epochs == 3
    assert spec.deepspeed.zero_stage == 2 and spec.retries.limit == 3


@pytest.mark.parametrize("changes, expected", [
    ({"seeds": [1, 1]}, "seeds must be unique"),
    ({"intermediateTasks": ["anli", "anli"]}, "tasks must be unique"),
    ({"intermediateTasks": ["nope"]}, "spec.intermediateTasks[0]"),
    ({"baseline": False, "intermediateTasks": []}, "nothing to run"),
    ({"target": {"languages": ["en", "xx"]}}, "spec.target.languages[1]"),
    ({"maxConcurrentJobs": 0}, "spec.maxConcurrentJobs"),
    ({"trainng": {}}, "spec.trainng: unknown field"),
    ({"dataSource": "hub"}, "need dataSource: synthetic"),
    ({"dataSource": "hub", "backbones": [{"name": "a", "model": "m"}], "intermediateTasks": ["sst2", "ccg"]},
     "spec.dataDir: ccg and multitask read CCGbank"),
    ({"dataSource": "hub", "backbones": [{"name": "a", "model": "m"}], "intermediateTasks": ["multitask"]},
     "set dataDir"),
    ({"backbones": [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]}, "names must be unique"),
    ({"backbones": [{"name": "Bad_Name", "model": "m"}]}, "spec.backbones[0].name"),
    ({"backbones": [{"name": "a", "model": "m", "moe": {"experts": 8}}]}, "only for architecture: moe"),
    ({"backbones": [{"name": "a", "model": "m", "architecture": "moe", "gpusPerWorker": 8,
                     "moe": {"experts": 6, "expertParallelSize": 4}}]}, "must divide moe.experts"),
    ({"backbones": [{"name": "a", "model": "m", "architecture": "moe", "workers": 1, "gpusPerWorker": 2,
                     "moe": {"experts": 8, "expertParallelSize": 4}}]}, "divide the job's world size"),
    ({"backbones": [{"name": "a", "model": "m", "architecture": "moe", "gpusPerWorker": 8}],
      "deepspeed": {"zeroStage": 3}}, "ZeRO-3"),
    ({"seeds": [1, 2], "answer": {"targetHalfWidth": 3}}, "with spec.answer the seeds are numbered 1 to"),
    ({"seeds": None, "answer": {"targetHalfWidth": 3, "firstSeeds": 5, "maxSeeds": 4}},
     "spec.answer.firstSeeds cannot exceed answer.maxSeeds"),
    ({"seeds": None, "answer": {"targetHalfWidth": 3}, "intermediateTasks": []}, "needs a dense and an MoE backbone"),
    ({"seeds": None, "answer": {"targetHalfWidth": 0}}, "spec.answer.targetHalfWidth"),
    ({"seeds": None, "answer": {"targetHalfWidth": 3, "firstSeeds": 1}}, "spec.answer.firstSeeds"),
])
def test_bad_specs_name_the_field(changes, expected):
    assert expected in error(experiment(**changes))


def test_bad_metadata_and_kind():
    doc = experiment()
    doc["metadata"]["name"] = "Has Spaces"
    assert "metadata.name" in error(doc)
    doc = experiment()
    doc["kind"] = "Experiment"
    assert "apiVersion/kind" in error(doc)


def test_trainer_registry_is_the_contracts_catalogue():
    """Task traits are defined once (stilts_contract.tasks); the trainer registers data for exactly those."""
    from stilts_contract import tasks as contract
    from stilts_trainer import formats, tasks
    assert set(tasks.names()) == set(contract.TASKS)
    assert set(S.INTERMEDIATE_TASKS) == {n for n in tasks.names() if not tasks.get(n).traits.evaluation_only}
    for name in tasks.names():
        assert tasks.get(name).format in formats.NAMES + (contract.MULTITASK,)
