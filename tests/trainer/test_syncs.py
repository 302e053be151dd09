"""Host syncs per training step, held to a budget (issue: a GPU step at 11% MFU). Counted on CPU by
sync_checks.py, attributed to their call sites; see that file for how."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ENGINE = REPO / "trainer" / "stilts_trainer" / "engine.py"
MOE_LAYERS = 2  # the check's backbone: 4 layers, an MoE layer every second one


def _line_of(text: str) -> str:
    number = next(i for i, line in enumerate(ENGINE.read_text().splitlines(), 1) if text in line)
    return f"engine.py:{number}"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["fp32", "autocast", "compiled"])
def test_a_training_step_reads_the_device_at_most_where_a_library_must(pretrained, tmp_path, path):
    """fp32 is a CPU job's path; autocast is one bf16 CUDA process's (plain mixed precision instead of
    DeepSpeed's FP16_UnfusedOptimizer, which reads an overflow flag per parameter), run here on CPU;
    compiled is fp32 with deepspeed.compileLayers (torch.compile per encoder layer)."""
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("sync_checks.py")), str(pretrained), str(tmp_path)]
                       + ([f"--{path.removesuffix('d')}"] if path != "fp32" else []),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    per_step = json.loads(r.stdout.strip().splitlines()[-1])
    if path == "compiled":
        # Regional compilation: the layers share graphs (two backbones, train and eval, a recompile for
        # dynamic lengths), far fewer than one per layer and step.
        assert 0 < per_step.pop("graphs") <= 16, r.stdout
        # Every compiled job (dense and MoE, 20 and 40 steps) trained through compiled graphs.
        assert per_step.pop("trained through compiled graphs") == [True] * 4, r.stdout
    if path != "fp32":
        for backbone in ("dense", "moe"):
            assert per_step.pop(f"{backbone} weights") == ["torch.float32"], "master weights stay fp32"
            assert per_step.pop(f"{backbone} same names"), "checkpoints keep their parameter names"
            changed, default = per_step.pop(f"{backbone} loss")
            gap = max(abs(a - b) for a, b in zip(changed, default))
            if path == "autocast":
                # bf16 matrix products: the same training, not the same bits (so autocast did take effect).
                assert 0 < gap < 0.05, (backbone, gap, changed, default)
            else:
                # Compiled fp32 kernels only reorder float arithmetic: the same losses to rounding.
                assert gap < 2e-3, (backbone, gap, changed, default)
    # The batch's token count is summed on the host, before the batch goes to the device: not a sync.
    host = {f"__int__ {_line_of('real = int(attention_mask')}"}
    for backbone, reads in per_step.items():
        device = {site: n for site, n in reads.items() if site not in host and n > 0}
        # DeepSpeed's throughput timer is off: no synchronize() at all.
        assert not any(site.startswith("synchronize") for site in device), (backbone, device)
        # stilts' own reads happen only at report points (every 10 steps), never per step.
        ours = {site: n for site, n in device.items() if site.split()[1].startswith(("engine.py", "moe.py"))}
        assert all(n <= 0.1 for n in ours.values()), (backbone, ours)
        # transformers' SDPA mask check (mask.all() in every forward) is gone: the loop tells the model
        # whether the batch it built on the host has padding (model.encoder_mask).
        assert not any("masking_utils" in site for site in device), (backbone, device)
        # What is left is DeepSpeed's: its capacity int(C) once per MoE layer.
        budget = (MOE_LAYERS if backbone == "moe" else 0) + sum(ours.values())
        assert sum(device.values()) <= budget + 1e-9, (backbone, device)
    print(json.dumps(per_step, indent=1))
