"""Checkpoints load as data, never as code.

`torch.load` without `weights_only` unpickles whatever a file names, so anyone who can write the
shared volume could run code in every later job. Everything stilts resumes from loads with
`weights_only=True`: our RNG files directly, DeepSpeed's shards through `SafeCheckpointEngine`. The
allow-list is the few DeepSpeed classes its shards hold (found by loading real ZeRO and MoE
checkpoints, see tests/trainer/test_durability.py); a file naming anything else is refused.
"""

from __future__ import annotations

import pickle
import re

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file names code to run when loaded: stilts never writes such a file."""


def allowed_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load(path, map_location=None):
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            refused = re.search(r"GLOBAL (\S+)", str(err))
            if refused:
                raise UnsafeCheckpoint(
                    f"{path} names code to run when loaded ({refused[1]}); stilts never writes that, so it refuses "
                    "to load it. Someone with write access to the volume may have planted it: inspect the "
                    "volume, delete the file's checkpoint directory, and run the job again") from None
            raise


class SafeCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, loading with `weights_only=True`."""

    def load(self, path: str, map_location=None):
        return load(path, map_location)
