"""Bad input: one clear line naming the field, a non-zero exit, and no COMPLETE left behind."""

import json

import pytest

from stilts_trainer.job import JobError, parse
from tests.conftest import job_body, run_trainer


def error_of(raw: dict) -> str:
    with pytest.raises(JobError) as info:
        parse(raw)
    return str(info.value)


def test_valid_job_has_paper_defaults(tmp_path):
    job = parse({"phase": "pretrain", "backbone": {"name": "d", "model": "stilts/tiny-xlmr"}, "output": str(tmp_path)})
    hp = job.hyperparameters
    assert (hp.learning_rate, hp.batch_size, hp.micro_batch_size, hp.epochs, hp.max_seq_length) == (1e-5, 32, 4, 2, 256)
    assert (hp.warmup_ratio, hp.adam_epsilon, hp.max_grad_norm, hp.eval_every_steps, hp.eval_examples,
            hp.early_stopping_patience) == (0.1, 1e-8, 1.0, 1000, 500, 30)


@pytest.mark.parametrize("change, field", [
    ({"task": "nope"}, "task"),
    ({"languages": ["en", "xx"]}, "languages"),
    ({"phase": "finetune"}, "phase"),
    ({"hyperparameters": {"learningRate": -1}}, "hyperparameters.learningRate"),
    ({"hyperparameters": {"batchSze": 3}}, "hyperparameters.batchSze"),
    ({"backbone": {"name": "d", "model": "m", "moe": {"experts": 4}}}, "backbone"),
    ({"backbone": {"name": "d", "model": "m", "architecture": "moe", "moe": {"experts": 4, "topK": 2,
                                                                          "expertParallelSize": 3}}}, "backbone.moe"),
    ({"backbone": {"name": "d", "model": "m", "architecture": "moe"}, "deepspeed": {"zeroStage": 3}}, "deepspeed"),
])
def test_bad_fields_are_named(tmp_path, change, field):
    raw = job_body("evaluate", tmp_path / "out", tmp_path, task="xnli")
    raw.update(change)
    message = error_of(raw)
    assert field in message, message


def test_missing_or_unfinished_parent(tmp_path):
    (tmp_path / "parent").mkdir()
    raw = job_body("target", tmp_path / "out", tmp_path / "parent", task="mnli")
    assert "COMPLETE" in error_of(raw) and "parent" in error_of(raw)
    raw = job_body("evaluate", tmp_path / "out", None, task="xnli")
    assert "parent" in error_of(raw)


def test_xnli_is_never_a_training_task(tmp_path):
    assert "zero-shot" in error_of(job_body("target", tmp_path / "o", None, task="xnli",
                                            backbone={"name": "d", "model": "FacebookAI/xlm-roberta-base"}))


@pytest.mark.parametrize("body", [
    "{not json",
    json.dumps({"phase": "target", "task": "nope", "backbone": {"name": "d", "model": "x"}, "output": "OUT"}),
    json.dumps({"phase": "evaluate", "task": "xnli", "languages": ["klingon"],
                "backbone": {"name": "d", "model": "x"}, "output": "OUT", "parent": "OUT"}),
])
def test_cli_exits_2_with_one_line_and_no_complete(tmp_path, body):
    out = tmp_path / "out"
    path = tmp_path / "job.json"
    path.write_text(body.replace("OUT", str(out)))
    import subprocess, sys
    result = subprocess.run([sys.executable, "-m", "stilts_trainer", "--job", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stilts_trainer: error:"), result.stderr
    assert not (out / "COMPLETE").exists()


def test_batch_that_does_not_divide_fails_before_training(tmp_path, pretrained):
    job = job_body("target", tmp_path / "out", pretrained, task="mnli",
                   hyperparameters={"batchSize": 30, "microBatchSize": 16})
    result = run_trainer(job, tmp_path)
    assert result.returncode == 2
    assert "hyperparameters.batchSize" in result.stderr
    assert not (tmp_path / "out" / "COMPLETE").exists()


def test_tasks_command_lists_every_task_with_format_source_and_metric():
    import subprocess, sys
    from stilts_trainer import tasks
    out = subprocess.run([sys.executable, "-m", "stilts_trainer", "tasks"], capture_output=True, text=True).stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(tasks.names()) and len(rows) == 12
    for name in rows:
        task = tasks.get(name)
        assert all(part in rows[name] for part in (task.format, task.source, task.metric)), rows[name]
    assert "rajpurkar/squad_v2" in rows["squad_v2"] and "Rowan/hellaswag" in rows["hellaswag"]
    assert "<dataDir>/ccgbank" in rows["ccg"] and "mix of anli" in rows["multitask"]


@pytest.mark.parametrize("task", ["ccg", "multitask"])
def test_tasks_on_local_files_need_data_dir(tmp_path, task):
    raw = job_body("intermediate", tmp_path / "o", None, task=task, dataSource="hub",
                   backbone={"name": "d", "model": "FacebookAI/xlm-roberta-base"})
    message = error_of(raw)
    assert "dataDir" in message and "ccgbank" in message, message
    raw["dataDir"] = str(tmp_path)
    assert parse(raw).data_dir == str(tmp_path)


@pytest.mark.parametrize("error, code", [(JobError("hyperparameters.x: bad"), 2), (ValueError("a library's"), None)])
def test_only_bad_input_is_exit_2(tmp_path, monkeypatch, error, code):
    """Exit 2 is never retried, so it must mean bad input only: a library's ValueError is an ordinary
    failure (it propagates, the process exits 1, and the executor retries)."""
    from stilts_trainer import __main__ as cli, phases

    path = tmp_path / "job.json"
    path.write_text(json.dumps(job_body("pretrain", tmp_path / "out")))

    def fail(job):
        raise error

    monkeypatch.setattr(phases, "run", fail)
    if code is None:
        with pytest.raises(ValueError, match="a library's"):
            cli.main(["--job", str(path)])
    else:
        assert cli.main(["--job", str(path)]) == code
