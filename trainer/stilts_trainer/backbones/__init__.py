"""Backbone registry: one small module per architecture, beside tasks/ and formats/.

An architecture says how a job's model is built from its source (a hub checkpoint or a parent
job's `model/`), how the part the next phase inherits is saved, and which auxiliary loss training
must add. Today: `dense` (XLM-R as stored) and `moe` (XLM-R sparsely upcycled into DeepSpeed MoE
layers, moe.py).

Adding one (a native hub MoE, say) means a module here that registers an `Architecture`, the name in
the contract's `BackboneRef.architecture`, and its auxiliary loss: a native MoE trained without its
load-balancing loss would collapse onto a few experts without an error, which is why `dense` refuses
checkpoints that carry routers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stilts_contract.job import JobError

from torch import nn

# Config attributes of hub MoE models (Mixtral, Qwen-MoE, Switch, DBRX, ...): their router needs an
# auxiliary loss that no registered architecture provides.
NATIVE_MOE_KEYS = ("num_experts", "num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "moe_layer_freq")


@dataclass(frozen=True)
class Architecture:
    name: str
    encoder: Callable        # (source, backbone, world, training) -> XLMRobertaModel
    mlm: Callable            # (source, backbone, world) -> XLMRobertaForMaskedLM
    save: Callable           # (inheritable module, directory, backbone, is_main) -> None; called on every rank
    aux_loss: Callable[[nn.Module], object]   # module -> scalar tensor or None
    aux_weight: Callable     # backbone -> weight of aux_loss in the total loss, or None


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    _REGISTRY[arch.name] = arch
    return arch


def get(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise JobError(f"backbone.architecture: {name!r} is not one of {sorted(_REGISTRY)}") from None


def refuse_native_moe(source: str) -> None:
    """A hub checkpoint with its own routers would train here without its load-balancing loss."""
    import json

    config = Path(source) / "config.json"
    keys = set(json.loads(config.read_text())) if config.is_file() else set()
    found = sorted(keys & set(NATIVE_MOE_KEYS))
    if found:
        raise JobError(f"backbone.model: {source} is a native mixture-of-experts model ({', '.join(found)} in its "
                         "config); stilts trains dense XLM-R checkpoints and upcycles them itself (architecture: moe). "
                         "A native MoE needs its own entry in trainer/stilts_trainer/backbones/ with its auxiliary loss")


from . import dense, upcycled_moe  # noqa: E402,F401  (importing registers)
