"""Checkpoints load as data, never as code.

`torch.load` without `weights_only` unpickles whatever a file names, so anyone who can write the
shared volume could run code in every later job. Everything stilts resumes from loads with
`weights_only=True`: our RNG files directly, DeepSpeed's shards through `SafeCheckpointEngine`. The
allow-list is the few DeepSpeed classes its shards hold (found by loading real ZeRO and MoE
checkpoints, see tests/trainer/test_durability.py); a file naming anything else is refused.

Speed without giving any of that up: DeepSpeed's shards are mapped (`mmap=True`), not read into new
memory, because DeepSpeed copies what it loads into the engine's own tensors anyway. Read into new
memory, every byte was copied twice and every page of that memory faulted in first, and the model
states file, which DeepSpeed loads twice, was read twice (1.33 s for a 1.31 GB checkpoint in the page
cache, now 0.18 s: docs/benchmarks.md). Mapped, the bytes go once from the page cache into the
engine's tensors. Only torch's optimizer keeps the tensors it loads as they are; `load_checkpoint`
copies those into the optimizer's own, so no tensor keeps a checkpoint file mapped once the load ends
(old checkpoints are deleted, and a mapped file would keep its space on the volume). The price: a read
error on the volume during the copy is a SIGBUS that ends the process, not an exception.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file names code to run when loaded: stilts never writes such a file."""


def allowed_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load(path, map_location=None, mmap: bool = False):
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as err:
            refused = re.search(r"GLOBAL (\S+)", str(err))
            if refused:
                raise UnsafeCheckpoint(
                    f"{path} names code to run when loaded ({refused[1]}); stilts never writes that, so it refuses "
                    "to load it. Someone with write access to the volume may have planted it: inspect the "
                    "volume, delete the file's checkpoint directory, and run the job again") from None
            raise


class SafeCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, loading with `weights_only=True` from the mapped file."""

    def load(self, path: str, map_location=None):
        return load(path, map_location, mmap=True)


def load_checkpoint(engine, root: Path, tag: str):
    """`engine.load_checkpoint` (through `SafeCheckpointEngine`), with the optimizer state copied out
    of the mapped files as it loads."""
    hooks = [optimizer.register_load_state_dict_pre_hook(_into_own_state) for optimizer in _torch_optimizers(engine)]
    try:
        return engine.load_checkpoint(str(root), tag=tag, load_module_strict=True)
    finally:
        for hook in hooks:
            hook.remove()


def _torch_optimizers(engine) -> list[torch.optim.Optimizer]:
    """The torch optimizer under DeepSpeed's wrappers (ZeRO, bf16), which hold it as `.optimizer`."""
    optimizer = engine.optimizer
    while optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = getattr(optimizer, "optimizer", None)
    return [optimizer] if optimizer is not None else []


def _into_own_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """torch's `load_state_dict` keeps the loaded tensors as the optimizer's state: copy each into the
    state tensor the optimizer already has (ZeRO creates them at start; no new memory to fault in), or
    into a new one, so that none maps the file."""
    # the saved groups name their parameters by index, in the order of the current groups (as torch maps them)
    params = dict(zip((i for group in state_dict["param_groups"] for i in group["params"]),
                      (p for group in optimizer.param_groups for p in group["params"])))
    state = {}
    for index, saved in state_dict["state"].items():
        current = optimizer.state.get(params.get(index), {})
        state[index] = {key: _copied(value, current.get(key)) if torch.is_tensor(value) else value
                        for key, value in saved.items()}
    return {**state_dict, "state": state}


def _copied(value: torch.Tensor, into: torch.Tensor | None) -> torch.Tensor:
    if into is not None and into.shape == value.shape and into.dtype == value.dtype:
        return into.copy_(value)
    return value.clone()
