"""Host memory of one trainer process at paper scale, the basis of the trainer pods' default memory
request (operator/stilts/manifests.py): XLM-R large (random weights in a saved checkpoint, no hub),
loaded the way a job loads its parent, dense and as a masked-LM, each in a fresh process, beside the
runtime alone (torch, transformers, DeepSpeed imported). Peak RSS (VmHWM) of each.

Not measured here: the CUDA runtime's host memory (no GPU on this machine); `benchmarks/gpu.py`
reports the host peak of its GPU runs.

    .venv/bin/python benchmarks/host_memory.py
    .venv/bin/python benchmarks/host_memory.py --smoke   # a tiny model through the same steps (a check)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys
sys.path.insert(0, {root!r})
import deepspeed, transformers  # noqa: F401  the runtime every job imports
from stilts_trainer import model
from stilts_trainer.job import BackboneRef
what, path = sys.argv[1], sys.argv[2]
backbone = BackboneRef(name="b", model=path)
if what == "encoder":
    module = model.build_encoder(path, backbone, 1)
elif what == "mlm":
    module = model.build_mlm(path, backbone, 1)
if what != "runtime":  # read every weight, as the copy to the GPU does (safetensors maps the file)
    import torch
    with torch.no_grad():
        total = sum(float(p.sum()) for p in module.parameters())
# VmHWM, not ru_maxrss: the latter survives exec and would carry the launching process's peak. RssAnon:
# memory the kernel cannot reclaim (weights read from a mapped file are page cache until copied).
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmHWM"].split()[0]) / 2**20, int(status["RssAnon"].split()[0]) / 2**20)
"""


def peak_gib(what: str, path: str) -> tuple[float, float]:
    root = str(Path(__file__).resolve().parents[1] / "trainer")
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=root), what, path], capture_output=True, text=True,
                         check=True)
    peak, anonymous = out.stdout.strip().splitlines()[-1].split()
    return float(peak), float(anonymous)


def xlmr_config(smoke: bool):
    """XLM-R large's shape, or a tiny one of the same family for --smoke."""
    from transformers import XLMRobertaConfig

    if smoke:
        return XLMRobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=130, type_vocab_size=1)
    return XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                            intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny XLM-R instead of large (the suite runs it)")
    args = parser.parse_args()
    import torch
    from transformers import XLMRobertaForMaskedLM

    work = Path(tempfile.mkdtemp(prefix="stilts-host-memory-"))
    try:
        config = xlmr_config(args.smoke)
        torch.manual_seed(0)
        XLMRobertaForMaskedLM(config).save_pretrained(work / "xlmr-large")
        size = sum(p.stat().st_size for p in (work / "xlmr-large").iterdir()) / 2**30
        runtime = peak_gib("runtime", str(work / "xlmr-large"))
        encoder = peak_gib("encoder", str(work / "xlmr-large"))
        mlm = peak_gib("mlm", str(work / "xlmr-large"))
        name = "a tiny XLM-R (--smoke)" if args.smoke else "XLM-R large"
        print(f"{name} checkpoint {size:.2f} GiB (fp32); peak host RSS of one process:")
        for label, (peak, anonymous) in (("runtime only (torch, transformers, DeepSpeed)", runtime),
                                         ("+ the encoder, every weight read (intermediate, target)", encoder),
                                         ("+ the masked-LM, every weight read (pretrain, mlmMix)", mlm)):
            print(f"  {label:<58} peak {peak:5.2f} GiB, of it not reclaimable at the end {anonymous:5.2f} GiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
