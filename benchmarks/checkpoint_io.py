"""Checkpoint speed against the disk's own: a step checkpoint of an XLM-R-large-shaped model (its
width and heads, fewer layers and a smaller vocabulary so that it fits a small machine; --layers and
--vocab scale it) saved through stilts' commit path (DeepSpeed ZeRO-2 shards with Adam state, our RNG
file, fsync of every file, the COMMITTED marker) and loaded through its resume path (safe loading,
the ranks' agreement), each beside `dd` moving the same bytes in the same run.

    .venv/bin/python benchmarks/checkpoint_io.py [--layers 4] [--vocab 30000] [--dir DIR]
    .venv/bin/python benchmarks/checkpoint_io.py --smoke   # the same paths at a tiny size (a check)

Figures: bytes per checkpoint, save MB/s vs `dd conv=fsync` MB/s (the ratio is the figure), the
save without the fsyncs (what durability costs), load MB/s vs `dd` reading the same files, and where
the load's time goes: in `torch.load` (each file DeepSpeed loads, and how often) or after it
(DeepSpeed copying into the engine's tensors). Reads come from the page cache unless the caches can
be dropped (root on a real machine); it says which. The load must leave no checkpoint file mapped.
"""

from __future__ import annotations

import argparse
import gc
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


def build_engine(layers: int, vocab: int):
    """A DeepSpeed ZeRO-2 engine around the model, after one step (Adam's moments exist from then on)."""
    import deepspeed
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from stilts_trainer import safe_load

    config = XLMRobertaConfig(vocab_size=vocab, hidden_size=1024, num_hidden_layers=layers,
                              num_attention_heads=16, intermediate_size=4096, max_position_embeddings=514)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    ds_config = {"train_batch_size": 2, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                 "optimizer": {"type": "AdamW", "params": {"lr": 1e-5, "torch_adam": True}},
                 "zero_optimization": {"stage": 2}, "steps_per_print": 10**9}
    ds, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
    ds.checkpoint_engine = safe_load.SafeCheckpointEngine(ds._config)
    batch = torch.randint(5, vocab, (2, 32))
    ds.backward(ds(input_ids=batch).last_hidden_state.float().pow(2).mean())
    ds.step()
    return ds, sum(p.numel() for p in model.parameters())


def timed_loads(checkpoint_engine, spent: list[tuple[str, float]]) -> None:
    """Record each file DeepSpeed loads through the checkpoint engine, and the seconds `torch.load` took."""
    load = checkpoint_engine.load

    def timed(path, map_location=None):
        start = time.perf_counter()
        try:
            return load(path, map_location)
        finally:
            spent.append((Path(path).name, time.perf_counter() - start))

    checkpoint_engine.load = timed


def mapped_files(directory: Path) -> int:
    """Mappings of files under `directory` left in this process (a mapped file keeps its space when deleted)."""
    gc.collect()
    return sum(str(directory) in line for line in Path("/proc/self/maps").read_text().splitlines())


def save(ds, ctx, generator, root: Path, step: int, fsync) -> float:
    from stilts_trainer import engine

    real, engine.fsync_tree = engine.fsync_tree, fsync
    try:
        start = time.perf_counter()
        engine._save_checkpoint(ds, root, engine.LoopState(step=step), ctx, generator)
        return time.perf_counter() - start
    finally:
        engine.fsync_tree = real


def load(ds, ctx, generator, root: Path, step: int, spent: list) -> float:
    from stilts_trainer import engine

    spent.clear()
    start = time.perf_counter()
    resumed = engine._resume(ds, root, ctx, generator)
    elapsed = time.perf_counter() - start
    assert resumed is not None and resumed.step == step
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="encoder layers (XLM-R large has 24)")
    parser.add_argument("--vocab", type=int, default=30000, help="vocabulary (XLM-R has 250,002)")
    parser.add_argument("--dir", default="", help="where to write (default: a temporary directory; give a "
                        "path on the volume to measure it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 layer, vocab 1000, once, the page cache left "
                        "alone (the suite runs it: a check of the code paths, no figures)")
    args = parser.parse_args()
    if args.smoke:
        args.layers, args.vocab, args.repeats = 1, 1000, 1
    # A test must not empty the page cache of a machine others share.
    drop = (lambda: False) if args.smoke else drop_caches

    import torch

    from stilts_trainer import engine

    ctx = engine.init_distributed()
    ds, params = build_engine(args.layers, args.vocab)
    spent: list[tuple[str, float]] = []
    timed_loads(ds.checkpoint_engine, spent)

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="stilts-ckpt-"))
    base.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    dropped = drop()
    rows: dict[str, list[float]] = {"save": [], "save_no_fsync": [], "dd_write": [], "load": [], "dd_read": [],
                                    "torch_load": []}
    size, loads, mapped = 0, [], 0
    for i in range(args.repeats):
        rows["save"].append(save(ds, ctx, generator, base / f"save-{i}", i + 1, engine.fsync_tree))
        rows["save_no_fsync"].append(save(ds, ctx, generator, base / f"save_no_fsync-{i}", i + 1, lambda _: None))
        tag = base / f"save-{i}" / f"step-{i + 1}"
        files = sorted(p for p in tag.iterdir() if p.is_file())
        size = sum(p.stat().st_size for p in files)
        rows["dd_write"].append(dd([f"if=/dev/zero", f"of={base / 'dd.bin'}", "bs=4M",
                                    f"count={max(1, size // (4 << 20))}", "conv=fsync"]))
        drop()
        rows["load"].append(load(ds, ctx, generator, base / f"save-{i}", i + 1, spent))
        rows["torch_load"].append(sum(seconds for _, seconds in spent))
        loads = [name for name, _ in spent]
        mapped = max(mapped, mapped_files(base))
        drop()
        start = time.perf_counter()
        for p in files:
            subprocess.run(["dd", f"if={p}", "of=/dev/null", "bs=4M"], check=True, capture_output=True)
        rows["dd_read"].append(time.perf_counter() - start)
        for name in ("save", "save_no_fsync"):
            subprocess.run(["rm", "-rf", str(base / f"{name}-{i}")], check=True)
    (base / "dd.bin").unlink(missing_ok=True)
    report(args, params, size, base, dropped, rows, loads, mapped)


def report(args, params: int, size: int, base: Path, dropped: bool, rows: dict[str, list[float]],
           loads: list[str], mapped: int) -> None:
    import torch

    def median(name: str) -> float:
        return statistics.median(rows[name])  # the median: one disturbed repeat does not decide

    def mbps(name: str) -> float:
        return size / median(name) / 1e6

    print(f"model: XLM-R-large width, {args.layers} layers, vocab {args.vocab}: {params / 1e6:.0f}M parameters; "
          f"checkpoint {size / 1e9:.2f} GB (fp32 weights + ZeRO-2 fp32 master and Adam moments); "
          f"XLM-R large itself: 560M parameters, about {560e6 * 16 / 1e9:.1f} GB")
    kept = "--smoke leaves it alone" if args.smoke else "not root"
    print(f"torch threads: {torch.get_num_threads()} (on a shared machine OMP_NUM_THREADS=1: a parallel copy waits "
          "for its descheduled thread)")
    print(f"directory: {base}; page cache dropped before reads: "
          f"{'yes' if dropped else f'no ({kept}): reads are from memory'}")
    print(f"save (commit path, with fsync):  {mbps('save'):8.0f} MB/s   vs dd conv=fsync {mbps('dd_write'):8.0f} MB/s"
          f"   ratio {mbps('save') / mbps('dd_write'):.2f}")
    print(f"save without the fsyncs:         {mbps('save_no_fsync'):8.0f} MB/s   (durability costs "
          f"{median('save') - median('save_no_fsync'):.2f} s per checkpoint here)")
    print(f"load (resume path, safe loading): {mbps('load'):8.0f} MB/s   vs dd read {mbps('dd_read'):8.0f} MB/s"
          f"   ratio {mbps('load') / mbps('dd_read'):.2f}")
    print(f"load breakdown: torch.load {median('torch_load'):.2f} s of {median('load'):.2f} s (the rest: DeepSpeed "
          f"copying into the engine's tensors, the ranks' agreement); files loaded: {', '.join(loads)}")
    print(f"checkpoint files still mapped after the load: {mapped}")
    print("seconds per repeat: " + ", ".join(f"{k} {[round(v, 2) for v in vs]}" for k, vs in rows.items()))


if __name__ == "__main__":
    main()
