"""Host syncs per training step, counted on CPU: run by test_syncs.py in a child process (a process group
must not leak into the test runner). Prints one JSON object.

On a GPU, reading a device tensor on the host (item, bool, int, tolist) and the accelerator's
synchronize() each stall the host until the device catches up, so the next step's kernels are not
queued in time. On CPU the same calls happen on the same code paths, so they can be counted here. The
count per step is the marginal one: two runs of one job that differ only in their number of steps, so
start-up, evaluation and the save cancel out.

    python tests/trainer/sync_checks.py PRETRAINED_DIR OUT_DIR [--autocast | --compile]

--autocast takes the path one bf16 CUDA process takes (engine.autocast_dtype: plain mixed precision under
bf16 autocast), here on CPU, where the trainer would otherwise run fp32; --compile turns on
deepspeed.compileLayers (torch.compile per encoder layer). Either also reports the dtypes and names of
the saved weights, and the training-loss curve beside the same job's on the default path, and
--compile the graphs torch.compile made.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import torch
from deepspeed.accelerator import get_accelerator

from stilts_trainer import engine, job as contract, phases

COUNTS: Counter = Counter()
ACTIVE = [False]


def _counting(name, original):
    def wrapper(*args, **kwargs):
        if ACTIVE[0]:
            caller = sys._getframe(1)
            where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
            COUNTS[f"{name} {where}"] += 1
        return original(*args, **kwargs)
    return wrapper


def instrument() -> None:
    for name in ("item", "__bool__", "__int__", "tolist"):
        setattr(torch.Tensor, name, _counting(name, getattr(torch.Tensor, name)))
    accelerator = get_accelerator()
    accelerator.synchronize = _counting("synchronize", accelerator.synchronize)


def count(body: dict) -> Counter:
    COUNTS.clear()
    ACTIVE[0] = True
    try:
        phases.run(contract.parse(body))
    finally:
        ACTIVE[0] = False
    return Counter(COUNTS)


TRAINED_THROUGH_COMPILED: list[bool] = []


def _observe_compiled_training() -> None:
    """Record, for the first training forward after compile_layers, whether its loss backpropagates
    through a compiled graph (a CompiledFunctionBackward node): the compiled layers really train."""
    compile_layers = engine.compile_layers

    def observed(model):
        def hook(module, args, kwargs, out):
            if module.training and torch.is_grad_enabled() and "loss" in out:
                seen, stack, found = set(), [out["loss"].grad_fn], False
                while stack and not found:
                    fn = stack.pop()
                    if fn is None or fn in seen:
                        continue
                    seen.add(fn)
                    found = type(fn).__name__ == "CompiledFunctionBackward"
                    stack.extend(next_fn for next_fn, _ in fn.next_functions)
                TRAINED_THROUGH_COMPILED.append(found)
                handle.remove()
        handle = model.register_forward_hook(hook, with_kwargs=True)
        return compile_layers(model)

    engine.compile_layers = observed


def body(phase_dir: Path, parent: Path, steps: int, backbone: dict, compiled: bool = False) -> dict:
    return {"phase": "target", "task": "mnli", "backbone": backbone, "dataSource": "synthetic",
            "deepspeed": {"compileLayers": compiled},
            "output": str(phase_dir), "parent": str(parent), "seed": 1, "checkpointEverySteps": 100000,
            "hyperparameters": {"learningRate": 5e-4, "batchSize": 16, "microBatchSize": 16, "maxSteps": steps,
                                "maxSeqLength": 48, "evalEverySteps": 100000, "evalExamples": 32,
                                "maxTrainExamples": 2000, "warmupRatio": 0.1}}


def main() -> None:
    pretrained, out = Path(sys.argv[1]), Path(sys.argv[2])
    autocast, compiled = "--autocast" in sys.argv[3:], "--compile" in sys.argv[3:]
    fp32 = engine.autocast_dtype
    if autocast:
        engine.autocast_dtype = lambda job, device, world: torch.bfloat16
    instrument()
    if compiled:
        _observe_compiled_training()
    backbones = {"dense": {"name": "d", "model": "stilts/tiny-xlmr"},
                 "moe": {"name": "m", "model": "stilts/tiny-xlmr", "architecture": "moe",
                         "moe": {"experts": 4, "topK": 2, "everyNLayers": 2, "expertParallelSize": 1}}}
    result = {}
    for name, backbone in backbones.items():
        short = count(body(out / f"{name}-20", pretrained, 20, backbone, compiled))
        long = count(body(out / f"{name}-40", pretrained, 40, backbone, compiled))
        per_step = {k: (long[k] - short[k]) / 20 for k in sorted(set(short) | set(long))}
        result[name] = {k: v for k, v in per_step.items() if v}
        if autocast or compiled:
            from safetensors.torch import load_file
            weights = load_file(str(out / f"{name}-40" / "model" / "model.safetensors"))
            metrics = json.loads((out / f"{name}-40" / "metrics.json").read_text())
            result[f"{name} weights"] = sorted({str(t.dtype) for t in weights.values()})
            patched, engine.autocast_dtype = engine.autocast_dtype, fp32
            count(body(out / f"{name}-default", pretrained, 40, backbone))
            engine.autocast_dtype = patched
            reference = json.loads((out / f"{name}-default" / "metrics.json").read_text())
            result[f"{name} loss"] = [metrics["lossCurve"]["mnli"], reference["lossCurve"]["mnli"]]
            plain = load_file(str(out / f"{name}-default" / "model" / "model.safetensors"))
            result[f"{name} same names"] = sorted(weights) == sorted(plain)
    if compiled:
        from torch._dynamo.utils import counters
        result["graphs"] = counters["stats"]["unique_graphs"]
        result["trained through compiled graphs"] = TRAINED_THROUGH_COMPILED
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
