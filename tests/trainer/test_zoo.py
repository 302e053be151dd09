"""Every intermediate task, and the multi-task mix, through intermediate -> target -> evaluate in
real trainer processes; two processes (and, for some, expert parallelism) for one task per format."""

import json

import pytest

from stilts_trainer import formats, tasks
from tests.conftest import job_body, run_trainer
from tests.trainer.ccgbank import write_ccgbank

pytestmark = pytest.mark.slow

MOE = {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
       "moe": {"experts": 2, "topK": 2, "everyNLayers": 2, "expertParallelSize": 2}}
DENSE = {"name": "dense", "model": "stilts/tiny-xlmr"}
INTERMEDIATE = {"learningRate": 1e-3, "maxSteps": 40, "evalEverySteps": 1000, "evalExamples": 100,
                "maxSeqLength": 64, "spanMaxSeqLength": 64, "docStride": 16}
TARGET = {"maxSteps": 8, "evalEverySteps": 1000, "evalExamples": 100}

# (task, processes, backbone): one task per format on two processes, MoE with ep=2 for the formats
# whose batches change shape (choices, windows), and the mix on two processes with ep=2: every rank
# must run the same head, and heads idle in a step must not stall the gradient reduction.
CASES = [
    ("sst2", 2, DENSE), ("commonsenseqa", 2, MOE), ("squad_v2", 2, MOE), ("ccg", 2, DENSE),
    ("anli", 1, DENSE), ("mnli", 1, DENSE), ("qqp", 1, DENSE), ("hellaswag", 1, DENSE), ("cosmosqa", 1, DENSE),
    ("squad", 1, DENSE), ("multitask", 2, MOE),
]


def test_the_cases_cover_every_task_and_format():
    assert {c[0] for c in CASES} == {n for n in tasks.names() if len(tasks.get(n).languages) == 1}
    two = {tasks.get(c[0]).format for c in CASES if c[1] == 2}
    assert set(formats.NAMES) <= two


@pytest.mark.parametrize("task, nproc, backbone", CASES, ids=[c[0] for c in CASES])
def test_intermediate_target_evaluate(task, nproc, backbone, tmp_path, pretrained):
    inter, target, evaluate = tmp_path / "inter", tmp_path / "target", tmp_path / "eval"
    extra = {}
    if task == "ccg":  # CCGbank comes from local files: the real reader, fed a release-shaped tree
        ccg = tasks.get("ccg")
        write_ccgbank(tmp_path / "data", {s: ccg.synthetic(s, 1, "en") for s in ("train", "dev")})
        extra = {"dataSource": "hub", "dataDir": str(tmp_path / "data")}
    r = run_trainer(job_body("intermediate", inter, pretrained, task=task, backbone=backbone,
                             hyperparameters=INTERMEDIATE, **extra), tmp_path, nproc=nproc, name="i.json")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((inter / "metrics.json").read_text())
    members = tasks.get(task).members or (task,)
    assert set(metrics["dev"]) == set(members)
    for name in members:
        fmt = formats.get(tasks.get(name).format)
        assert 0 <= metrics["dev"][name][fmt.MAIN] <= 1, metrics["dev"]
        assert metrics["lossCurve"][name], f"{name}: no training loss recorded"
    heads = json.loads((inter / "model" / "heads.json").read_text())
    assert [h["task"] for h in heads] == list(members)

    r = run_trainer(job_body("target", target, inter, task="mnli", backbone=backbone, hyperparameters=TARGET),
                    tmp_path, nproc=nproc, name="t.json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [h["task"] for h in json.loads((target / "model" / "heads.json").read_text())] == ["mnli"]
    r = run_trainer(job_body("evaluate", evaluate, target, task="xnli", backbone=backbone, languages=["en", "sw"]),
                    tmp_path, nproc=nproc, name="e.json")
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((evaluate / "results.json").read_text())
    assert sorted(results["languages"]) == ["en", "sw"]
    for out in (inter, target, evaluate):
        assert json.loads((out / "COMPLETE").read_text())["worldSize"] == nproc
