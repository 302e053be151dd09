"""moe: XLM-R sparsely upcycled (Komatsuzaki et al. 2022): chosen feed-forward blocks become
DeepSpeed MoE layers whose experts start as copies of the block (moe.py). The total loss adds
auxLossWeight x the routers' load-balancing loss. Checkpoints store experts by global id, so they
load at any expert-parallel size."""

from __future__ import annotations

from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaModel

from .. import moe
from . import Architecture, dense, register


def encoder(source: str, backbone, world: int, training: bool = True) -> XLMRobertaModel:
    settings = backbone.moe_settings
    ep = moe.effective_ep_size(settings, world, training)
    if moe.is_moe_checkpoint(source):
        module = XLMRobertaModel(XLMRobertaConfig.from_pretrained(source), add_pooling_layer=False)
        moe.upcycle(module, settings, ep)
        moe.load_state(module, source, prefix_from="roberta.", drop_prefix="lm_head.")
        return module
    module = dense.encoder(source, backbone, world, training)
    moe.upcycle(module, settings, ep)
    return module


def mlm(source: str, backbone, world: int) -> XLMRobertaForMaskedLM:
    settings = backbone.moe_settings
    ep = moe.effective_ep_size(settings, world)
    if moe.is_moe_checkpoint(source):
        module = XLMRobertaForMaskedLM(XLMRobertaConfig.from_pretrained(source))
        moe.upcycle(module.roberta, settings, ep)
        moe.load_state(module, source)
        return module
    module = dense.mlm(source, backbone, world)
    moe.upcycle(module.roberta, settings, ep)
    return module


def save(module, directory, backbone, is_main: bool) -> None:
    settings = backbone.moe_settings
    layers = moe.layer_indices(module.config.num_hidden_layers, settings)
    moe.save(module, directory, settings.model_dump(by_alias=True), layers, is_main)


register(Architecture("moe", encoder, mlm, save, aux_loss=moe.aux_loss,
                      aux_weight=lambda backbone: backbone.moe_settings.aux_loss_weight))
