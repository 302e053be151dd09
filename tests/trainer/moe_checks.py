"""In-process MoE checks, run by test_moe.py in a child process (a process group must not leak into
the test runner). Prints one JSON object."""

import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from stilts_trainer import backbones, engine, model, moe, phases, synthetic
from stilts_trainer.job import BackboneRef as Backbone, MoE, parse


def main() -> None:
    engine.init_distributed()
    tok = model.train_tokenizer(synthetic.mlm_corpus(0, 200))
    torch.manual_seed(0)
    directory = tempfile.mkdtemp()
    model.tiny_mlm("stilts/tiny-xlmr", tok).save_pretrained(directory)
    dense = backbones.dense.encoder(directory, None, 1).eval()
    batch = tok(["the red cat sees the dog near the house", "the dog"], padding=True, return_tensors="pt")
    out = {}
    for k in (1, 2):
        settings = MoE(experts=4, topK=k, everyNLayers=2, expertParallelSize=1, dropTokens=False)
        up = model.build_encoder(directory, Backbone(name="m", model="x", architecture="moe", moe=settings), 1)
        moe.attach_groups(up)
        up.eval()
        real = batch["attention_mask"].bool()  # padding is kept out of routing; real tokens must match
        with torch.no_grad():
            diff = (dense(**batch).last_hidden_state - up(**batch).last_hidden_state)[real].abs().max().item()
        out[f"top{k}_max_diff"] = diff
        out[f"top{k}_routed_tokens"] = [int(layer.counts.sum()) for layer in moe.moe_layers(up)]
        out["real_tokens"] = int(real.sum())
        out["moe_layers"] = moe.layer_indices(4, settings)
        out["experts_identical"] = all(
            torch.equal(e.dense_in.weight, layer.moe.deepspeed_moe.experts.deepspeed_experts[0].dense_in.weight)
            for layer in moe.moe_layers(up) for e in layer.moe.deepspeed_moe.experts.deepspeed_experts)
    # The training loss includes the load-balancing loss.
    settings = MoE(experts=4, topK=2, everyNLayers=2, expertParallelSize=1, auxLossWeight=0.5)
    backbone = Backbone(name="m", model="x", architecture="moe", moe=settings)
    clf = model.TaskModel(model.build_encoder(directory, backbone, 1),
                          [model.HeadSpec("mnli", "classification", ("e", "n", "c"))], model.aux_loss(backbone))
    moe.attach_groups(clf)
    clf.train()
    labels = torch.tensor([0, 1])
    result = clf(batch["input_ids"], batch["attention_mask"], labels=labels)
    task_loss = torch.nn.functional.cross_entropy(result["logits"].float(), labels)
    out["aux_loss"] = result["aux_loss"].item()
    out["loss_minus_task"] = (result["loss"] - task_loss).item()
    out["stats"] = moe.load_stats(clf)
    # The mask the trainer builds without reading the device (model.encoder_mask) against transformers' own
    # handling of the 2D mask: the same logits, and in MoE layers the same load-balancing loss and the same
    # tokens routed, padded or not.
    dense_clf = model.TaskModel(backbones.dense.encoder(directory, None, 1),
                                [model.HeadSpec("mnli", "classification", ("e", "n", "c"))])
    full = tok(["the red cat sees the dog", "the dog sees the red cat"], padding=True, return_tensors="pt")
    assert bool(full["attention_mask"].all()), "the unpadded batch has no padding"
    diffs, routed_same = [], True
    for module in (clf.eval(), dense_clf.eval()):
        for inputs, padded in ((batch, True), (full, False)):
            with torch.no_grad():
                library = module(inputs["input_ids"], inputs["attention_mask"])
                routed = [layer.counts.clone() for layer in moe.moe_layers(module)]
                ours = module(inputs["input_ids"], inputs["attention_mask"], padded=padded)
            diffs.append((library["logits"] - ours["logits"]).abs().max().item())
            if "aux_loss" in ours:
                diffs.append((library["aux_loss"] - ours["aux_loss"]).abs().item())
            routed_same &= all(torch.equal(a, layer.counts) for a, layer in zip(routed, moe.moe_layers(module)))
    out["mask_paths_max_diff"] = max(diffs)
    out["mask_paths_routed_same"] = routed_same
    out.update(common_heads(directory))
    json.dump(out, sys.stdout)


def common_heads(directory: str) -> dict:
    """The task models phases builds for a dense and an upcycled MoE backbone at one seed: their heads
    (the only weights a phase draws) must be equal, so the arms of a seed are paired by common random
    numbers; another seed must draw another head."""
    ctx = engine.init_distributed()
    members = {"mnli": SimpleNamespace(task=SimpleNamespace(format="classification"), labels=("e", "n", "c"))}
    parent = tempfile.mkdtemp()  # a finished parent job, as parse checks; the weights come from directory
    Path(parent, "COMPLETE").write_text("{}")
    heads = {}
    for name, seed, backbone in (("dense", 3, {"name": "dense", "model": "stilts/tiny-xlmr"}),
                                 ("moe", 3, {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
                                             "moe": {"experts": 4, "topK": 2, "everyNLayers": 2,
                                                     "expertParallelSize": 1}}),
                                 ("dense-next-seed", 4, {"name": "dense", "model": "stilts/tiny-xlmr"})):
        job = parse({"phase": "target", "task": "mnli", "backbone": backbone, "dataSource": "synthetic",
                     "seed": seed, "output": tempfile.mkdtemp(), "parent": parent})
        heads[name] = phases._task_module(job, directory, members, ctx).heads.state_dict()
    same = lambda a, b: all(torch.equal(heads[a][k], heads[b][k]) for k in heads[a])
    return {"heads_equal_across_backbones": same("dense", "moe"), "heads_equal_across_seeds": same("dense", "dense-next-seed")}


if __name__ == "__main__":
    main()
