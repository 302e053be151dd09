"""Checkpoints a multi-day run can trust: every rank resumes from the same one, and a file that
names code to run is refused, never executed (real trainer processes, killed and resumed)."""

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import job_body, run_trainer, trainer_command
from tests.trainer.test_chain import _run_until_checkpoint_then_kill
from tests.trainer.test_moe import MOE

pytestmark = pytest.mark.slow


class Planted:
    """What an attacker with write access to the volume would leave: unpickling it runs a command."""

    def __init__(self, proof):
        self.proof = str(proof)

    def __reduce__(self):
        return os.system, (f"touch {self.proof}",)


def newest_checkpoint(out):
    return max((out / "checkpoints").glob("step-*/COMMITTED"), key=lambda p: int(p.parent.name[5:])).parent


@pytest.mark.parametrize("target", ["rng-rank0.pt", "mp_rank_00_model_states.pt"], ids=["our-rng-file",
                                                                                        "deepspeed-shard"])
def test_a_planted_pickle_is_refused_and_never_run(tmp_path, pretrained, target):
    out, proof = tmp_path / "out", tmp_path / "code-ran"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job_body("target", out, pretrained, task="mnli", checkpointEverySteps=10,
                                        hyperparameters={"maxTrainExamples": 800, "maxSteps": 20})))
    env = _run_until_checkpoint_then_kill(path, out / "checkpoints" / "step-10" / "COMMITTED")
    torch.save({"state": Planted(proof)}, newest_checkpoint(out) / target)
    r = subprocess.run(trainer_command(path), env=env, capture_output=True, text=True, timeout=600)
    assert not proof.exists(), "the planted pickle ran"
    assert r.returncode == 2, r.stderr[-3000:]  # permanent: a retry would meet the same file
    assert "names code to run when loaded" in r.stderr and target in r.stderr, r.stderr[-3000:]
    assert not (out / "COMPLETE").exists()


def test_ep2_ranks_agree_on_an_older_checkpoint_when_a_shard_is_torn_on_one_rank(tmp_path, pretrained):
    """Expert parallelism 2: rank 1 alone reads experts 2 and 3. Tearing one of its files in the newest
    checkpoint must send both ranks back to the same older step, and the run must still end exactly
    where an uninterrupted one does."""
    hp = {"maxTrainExamples": 3200, "evalEverySteps": 20, "evalExamples": 200, "earlyStoppingPatience": 100}
    body = dict(task="mnli", backbone=MOE, hyperparameters=hp, checkpointEverySteps=10)
    reference = tmp_path / "reference"
    r = run_trainer(job_body("target", reference, pretrained, **body), tmp_path, nproc=2, name="ref.json")
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "preempted"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job_body("target", out, pretrained, **body)))
    env = _run_until_checkpoint_then_kill(path, out / "checkpoints" / "step-20" / "COMMITTED", nproc=2)
    assert not (out / "COMPLETE").exists()
    newest = newest_checkpoint(out)
    older = int(newest.name[5:]) - 10
    shard = next(newest.glob("layer_*_expert_2_mp_rank_00_model_states.pt"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    r = subprocess.run(trainer_command(path, nproc=2), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "all ranks try an older one" in r.stderr, r.stderr[-3000:]
    assert f"resumed at step {older} " in r.stderr, r.stderr[-3000:]
    a, b = load_file(str(reference / "model" / "model.safetensors")), load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    experts = sorted(p.name for p in (reference / "model").glob("experts-*"))
    assert experts and experts == sorted(p.name for p in (out / "model").glob("experts-*"))
    for name in experts:
        x, y = load_file(str(reference / "model" / name)), load_file(str(out / "model" / name))
        assert all(torch.equal(x[k], y[k]) for k in x), name
    assert json.loads((out / "metrics.json").read_text())["dev"] == json.loads((reference / "metrics.json").read_text())["dev"]
