"""Sparse upcycling with DeepSpeed MoE: exactness of top-2 upcycling, expert parallelism across
processes and across two simulated nodes, checkpoints across expert-parallel sizes, bad input."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stilts_trainer.job import JobError, parse
from tests.conftest import free_port, job_body, run_trainer

MOE = {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
       "moe": {"experts": 4, "topK": 2, "everyNLayers": 2, "expertParallelSize": 2}}
SMALL = {"maxTrainExamples": 1280, "evalEverySteps": 20, "evalExamples": 200}


@pytest.fixture(scope="module")
def checks():
    script = Path(__file__).with_name("moe_checks.py")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_fresh_top2_upcycle_equals_the_dense_model_with_padding_kept_out_of_routing(checks):
    assert checks["experts_identical"]
    assert checks["top2_max_diff"] < 1e-5
    assert checks["moe_layers"] == [1, 3]
    # One first choice per real token in each MoE layer: no padding token was routed.
    assert checks["top2_routed_tokens"] == [checks["real_tokens"]] * 2


def test_the_mask_built_without_a_device_read_gives_what_transformers_gives(checks):
    """model.encoder_mask (no mask without padding, SDPA's boolean mask built on the device with it)
    against transformers' own handling of the 2D mask, which reads it on the host: dense and MoE."""
    assert checks["mask_paths_max_diff"] < 1e-5
    assert checks["mask_paths_routed_same"], "padding stays out of routing with the trainer's mask"


def test_a_seed_starts_dense_and_moe_with_the_same_head(checks):
    """Common random numbers: the MoE's routers are drawn before the head, yet both arms of a seed get
    the same head, so the moe-vs-dense contrast pairs runs that start from the same function."""
    assert checks["heads_equal_across_backbones"]
    assert not checks["heads_equal_across_seeds"]


def test_top1_upcycle_does_not_reproduce_dense_as_documented(checks):
    assert checks["top1_max_diff"] > 1e-3


def test_loss_includes_weighted_aux_loss_and_load_is_reported(checks):
    assert checks["aux_loss"] > 0
    assert checks["loss_minus_task"] == pytest.approx(0.5 * checks["aux_loss"], rel=1e-4)
    assert len(checks["stats"]["expert_share"]) == 4
    assert sum(checks["stats"]["expert_share"]) == pytest.approx(1.0)
    assert 0 <= checks["stats"]["dropped_share"] <= 1


@pytest.mark.parametrize("backbone, message", [
    ({**MOE, "moe": {**MOE["moe"], "topK": 2, "experts": 1, "expertParallelSize": 1}}, "moe.topK (2) cannot exceed moe.experts (1)"),
    ({**MOE, "moe": {**MOE["moe"], "expertParallelSize": 3}}, "must divide moe.experts"),
    ({**MOE, "architecture": "dense"}, "moe settings are only for architecture: moe"),
])
def test_bad_moe_settings_fail_before_training(tmp_path, backbone, message):
    with pytest.raises(JobError, match=re.escape(message)):
        parse(job_body("pretrain", tmp_path, backbone=backbone))


@pytest.mark.slow
def test_expert_parallel_size_that_does_not_divide_world_is_refused(tmp_path, pretrained):
    job = job_body("target", tmp_path / "t", pretrained, task="mnli", backbone=MOE, hyperparameters=SMALL)
    r = run_trainer(job, tmp_path)  # 1 process, ep=2
    assert r.returncode == 2 and "expertParallelSize (2) must divide the job's world size (1 " in r.stderr
    assert not (tmp_path / "t" / "COMPLETE").exists()


@pytest.mark.slow
def test_moe_chain_with_ep2_then_evaluation_with_any_world_size(tmp_path, pretrained):
    up, inter, target = tmp_path / "up", tmp_path / "inter", tmp_path / "target"
    r = run_trainer(job_body("pretrain", up, pretrained, backbone=MOE, metricsPort=free_port(),
                             hyperparameters={"maxSteps": 10, "batchSize": 32, "microBatchSize": 16,
                                              "maxSeqLength": 48}), tmp_path, nproc=2, name="u.json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (up / "model").glob("experts-*")) == ["experts-00000.safetensors",
                                                                        "experts-00001.safetensors"]
    r = run_trainer(job_body("intermediate", inter, up, task="qqp", backbone=MOE, hyperparameters=SMALL),
                    tmp_path, nproc=2, name="i.json")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_trainer(job_body("target", target, inter, task="mnli", backbone=MOE,
                             hyperparameters={**SMALL, "maxTrainExamples": 9600, "evalEverySteps": 100}),
                    tmp_path, nproc=2, name="t.json")
    assert r.returncode == 0, r.stderr[-3000:]
    results = {}
    # micro 20 -> evaluation batches of 160: 1000 test examples make 7 batches, so ranks get uneven shards.
    for nproc in (1, 2):
        out = tmp_path / f"eval{nproc}"
        r = run_trainer(job_body("evaluate", out, target, task="xnli", backbone=MOE, languages=["en", "de", "zh"],
                                 hyperparameters={"microBatchSize": 20}), tmp_path, nproc=nproc,
                        name=f"e{nproc}.json", timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        results[nproc] = json.loads((out / "results.json").read_text())["languages"]
    assert results[1] == results[2], "same checkpoint, same accuracy with ep=1 and ep=2"
    target_dev = json.loads((target / "metrics.json").read_text())["devScore"]
    assert results[1]["en"]["test"] > 0.45, (results, target_dev)


def _two_nodes(tmp_path, name, body):
    """One job as two PyTorchJob pods run it: two torchrun launches (--nnodes 2), one process each,
    rendezvous on loopback."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "stilts_trainer.launch", "--nnodes", "2", "--node-rank",
                               str(rank), "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
                               str(port), "-m", "stilts_trainer", "--job", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for rank in (0, 1)]
    logs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert json.loads((Path(body["output"]) / "COMPLETE").read_text())["worldSize"] == 2


@pytest.mark.slow
def test_moe_chain_across_two_simulated_nodes(tmp_path, pretrained):
    up, inter, target, evaluate = (tmp_path / n for n in ("up", "inter", "target", "eval"))
    _two_nodes(tmp_path, "up", job_body("pretrain", up, pretrained, backbone=MOE, hyperparameters={
        "maxSteps": 10, "batchSize": 32, "microBatchSize": 16, "maxSeqLength": 48}))
    _two_nodes(tmp_path, "inter", job_body("intermediate", inter, up, task="qqp", backbone=MOE,
                                           hyperparameters=SMALL))
    meta = json.loads((inter / "model" / "moe.json").read_text())
    assert meta["experts"] == 4 and meta["layers"] == [1, 3]
    _two_nodes(tmp_path, "target", job_body("target", target, inter, task="mnli", backbone=MOE,
                                            hyperparameters=SMALL))
    _two_nodes(tmp_path, "eval", job_body("evaluate", evaluate, target, task="xnli", backbone=MOE,
                                          languages=["en", "sw"]))
    results = json.loads((evaluate / "results.json").read_text())
    assert set(results["languages"]) == {"en", "sw"}
