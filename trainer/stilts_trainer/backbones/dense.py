"""dense: the checkpoint as stored (XLM-R), no auxiliary loss."""

from __future__ import annotations

from transformers import XLMRobertaForMaskedLM, XLMRobertaModel
from stilts_contract.job import JobError

from .. import moe
from . import Architecture, refuse_native_moe, register


def _check(source: str) -> None:
    if moe.is_moe_checkpoint(source):
        raise JobError("backbone.architecture: the parent is an MoE checkpoint; use architecture: moe")
    refuse_native_moe(source)


def encoder(source: str, backbone, world: int, training: bool = True) -> XLMRobertaModel:
    _check(source)
    return XLMRobertaModel.from_pretrained(source, add_pooling_layer=False)


def mlm(source: str, backbone, world: int) -> XLMRobertaForMaskedLM:
    _check(source)
    return XLMRobertaForMaskedLM.from_pretrained(source)


def save(module, directory, backbone, is_main: bool) -> None:
    if is_main:
        module.save_pretrained(directory)


register(Architecture("dense", encoder, mlm, save, aux_loss=lambda module: None, aux_weight=lambda backbone: None))
