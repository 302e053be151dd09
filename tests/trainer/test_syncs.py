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
@pytest.mark.parametrize("path", ["fp32", "autocast"])
def test_a_training_step_reads_the_device_at_most_where_a_library_must(pretrained, tmp_path, path):
    """fp32 is a CPU job's path; autocast is one bf16 CUDA process's (plain mixed precision instead of
    DeepSpeed's FP16_UnfusedOptimizer, which reads an overflow flag per parameter), run here on CPU."""
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("sync_checks.py")), str(pretrained), str(tmp_path)]
                       + (["--autocast"] if path == "autocast" else []), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    per_step = json.loads(r.stdout.strip().splitlines()[-1])
    if path == "autocast":
        for backbone in ("dense", "moe"):
            assert per_step.pop(f"{backbone} weights") == ["torch.float32"], "master weights stay fp32"
            bf16, fp32 = per_step.pop(f"{backbone} loss")
            gap = max(abs(a - b) for a, b in zip(bf16, fp32))
            # bf16 matrix products: the same training, not the same bits (so autocast did take effect).
            assert 0 < gap < 0.05, (backbone, gap, bf16, fp32)
    # The batch's token count is summed on the host, before the batch goes to the device: not a sync.
    host = {f"__int__ {_line_of('tokens += int(batch')}"}
    for backbone, reads in per_step.items():
        device = {site: n for site, n in reads.items() if site not in host and n > 0}
        # DeepSpeed's throughput timer is off: no synchronize() at all.
        assert not any(site.startswith("synchronize") for site in device), (backbone, device)
        # stilts' own reads happen only at report points (every 10 steps), never per step.
        ours = {site: n for site, n in device.items() if site.split()[1].startswith(("engine.py", "moe.py"))}
        assert all(n <= 0.1 for n in ours.values()), (backbone, ours)
        # What is left is the libraries': transformers' SDPA mask check once per forward and, for MoE,
        # DeepSpeed's capacity int(C) once per MoE layer.
        budget = 1 + (MOE_LAYERS if backbone == "moe" else 0) + sum(ours.values())
        assert sum(device.values()) <= budget + 1e-9, (backbone, device)
    print(json.dumps(per_step, indent=1))
