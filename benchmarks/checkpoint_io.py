"""Checkpoint speed against the disk's own: a step checkpoint of an XLM-R-large-shaped model (its
width and heads, fewer layers and a smaller vocabulary so that it fits a small machine; --layers and
--vocab scale it) saved through stilts' commit path (DeepSpeed ZeRO-2 shards with Adam state, our RNG
file, fsync of every file, the COMMITTED marker) and loaded through its resume path (safe loading,
the ranks' agreement), each beside `dd` moving the same bytes in the same run.

    .venv/bin/python benchmarks/checkpoint_io.py [--layers 4] [--vocab 30000] [--dir DIR]

Figures: bytes per checkpoint, save MB/s vs `dd conv=fsync` MB/s (the ratio is the figure), the
save without the fsyncs (what durability costs), load MB/s vs `dd` reading the same files. Reads
come from the page cache unless the caches can be dropped (root on a real machine); it says which.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "contract", ROOT / "trainer"):
    sys.path.insert(0, str(path))


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def dd(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(["dd", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="encoder layers (XLM-R large has 24)")
    parser.add_argument("--vocab", type=int, default=30000, help="vocabulary (XLM-R has 250,002)")
    parser.add_argument("--dir", default="", help="where to write (default: a temporary directory; give a "
                        "path on the volume to measure it)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import deepspeed
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from stilts_trainer import checkpoint, engine

    ctx = engine.init_distributed()
    config = XLMRobertaConfig(vocab_size=args.vocab, hidden_size=1024, num_hidden_layers=args.layers,
                              num_attention_heads=16, intermediate_size=4096, max_position_embeddings=514)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    params = sum(p.numel() for p in model.parameters())
    ds_config = {"train_batch_size": 2, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                 "optimizer": {"type": "AdamW", "params": {"lr": 1e-5, "torch_adam": True}},
                 "zero_optimization": {"stage": 2}, "steps_per_print": 10**9}
    ds, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
    ds.checkpoint_engine = engine.safe_load.SafeCheckpointEngine(ds._config)
    batch = torch.randint(5, args.vocab, (2, 32))
    ds.backward(ds(input_ids=batch).last_hidden_state.float().pow(2).mean())
    ds.step()  # Adam's moments exist from here on

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="stilts-ckpt-"))
    base.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    dropped = drop_caches()
    rows: dict[str, list[float]] = {"save": [], "save_no_fsync": [], "dd_write": [], "load": [], "dd_read": []}
    size = 0
    real_fsync = engine.fsync_tree
    for i in range(args.repeats):
        for name, fsync in (("save", real_fsync), ("save_no_fsync", lambda _: None)):
            root = base / f"{name}-{i}"
            engine.fsync_tree = fsync
            state = engine.LoopState(step=i + 1)
            start = time.perf_counter()
            engine._save_checkpoint(ds, root, state, ctx, generator)
            rows[name].append(time.perf_counter() - start)
        engine.fsync_tree = real_fsync
        tag = base / f"save-{i}" / f"step-{i + 1}"
        files = sorted(p for p in tag.iterdir() if p.is_file())
        size = sum(p.stat().st_size for p in files)
        rows["dd_write"].append(dd([f"if=/dev/zero", f"of={base / 'dd.bin'}", "bs=4M",
                                    f"count={max(1, size // (4 << 20))}", "conv=fsync"]))
        drop_caches()
        start = time.perf_counter()
        resumed = engine._resume(ds, base / f"save-{i}", ctx, generator)
        rows["load"].append(time.perf_counter() - start)
        assert resumed is not None and resumed.step == i + 1
        drop_caches()
        start = time.perf_counter()
        for p in files:
            subprocess.run(["dd", f"if={p}", "of=/dev/null", "bs=4M"], check=True, capture_output=True)
        rows["dd_read"].append(time.perf_counter() - start)
        for name in ("save", "save_no_fsync"):
            subprocess.run(["rm", "-rf", str(base / f"{name}-{i}")], check=True)
    (base / "dd.bin").unlink(missing_ok=True)

    def mbps(name: str) -> float:
        return size / statistics.median(rows[name]) / 1e6  # the median: one disturbed repeat does not decide

    print(f"model: XLM-R-large width, {args.layers} layers, vocab {args.vocab}: {params / 1e6:.0f}M parameters; "
          f"checkpoint {size / 1e9:.2f} GB (fp32 weights + ZeRO-2 fp32 master and Adam moments); "
          f"XLM-R large itself: 560M parameters, about {560e6 * 16 / 1e9:.1f} GB")
    print(f"directory: {base}; page cache dropped before reads: {'yes' if dropped else 'no (not root): reads are from memory'}")
    print(f"save (commit path, with fsync):  {mbps('save'):8.0f} MB/s   vs dd conv=fsync {mbps('dd_write'):8.0f} MB/s"
          f"   ratio {mbps('save') / mbps('dd_write'):.2f}")
    print(f"save without the fsyncs:         {mbps('save_no_fsync'):8.0f} MB/s   (durability costs "
          f"{statistics.median(rows['save']) - statistics.median(rows['save_no_fsync']):.2f} s per checkpoint here)")
    print(f"load (resume path, safe loading): {mbps('load'):8.0f} MB/s   vs dd read {mbps('dd_read'):8.0f} MB/s"
          f"   ratio {mbps('load') / mbps('dd_read'):.2f}")
    print("seconds per repeat: " + ", ".join(f"{k} {[round(v, 2) for v in vs]}" for k, vs in rows.items()))


if __name__ == "__main__":
    main()
