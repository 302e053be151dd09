"""Backbones and heads.

A phase's model = an XLM-R encoder + one head per task it trains (`TaskModel`; nine for
`multitask`), each head from its task's format (formats/). Phases hand over the encoder only: the
output `model/` directory is a transformers checkpoint the next phase loads with any world size;
the heads are saved beside it (heads.json + heads.pt) for `evaluate`, and later training phases
drop them. Hub XLM-R checkpoints are masked-LM checkpoints, and so are ours after `pretrain`, so
one loader serves both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from dataclasses import asdict, dataclass

from stilts_contract.names import MAX_SEQ_LENGTH
from stilts_contract.job import JobError

from . import backbones, formats, moe
from transformers import (AutoTokenizer, PreTrainedTokenizerFast, XLMRobertaConfig,
                          XLMRobertaForMaskedLM, XLMRobertaModel)

# Tiny XLM-R shapes for the offline world: same architecture, sizes a 2-core CPU trains in minutes.
# Small on purpose: a narrow model has to share its capacity between languages, which is what makes it
# align them (Dufter & Schütze 2020); 48 wide aligned the offline world better than 64 in the same time.
# No dropout: the offline world's data is plentiful and CPU dropout costs a fifth of a tiny step.
TINY_CONFIGS = {
    "stilts/tiny-xlmr": dict(hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=192,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "stilts/mini-xlmr": dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
}
TINY_VOCAB = 3000
MLM = "mlm"  # the training part (and TaskModel task) of masked-LM batches
HEADS_FILE, HEADS_WEIGHTS = "heads.json", "heads.pt"  # written beside the encoder; later phases drop them
TINY_MAX_POSITIONS = MAX_SEQ_LENGTH + 2  # XLM-R offsets positions by the padding index + 1


def hub_path(model_id: str, mirror: str) -> str:
    """A hub id read from the mirror root (hub layout: <mirror>/models/<org>/<name>) when one is set."""
    if mirror and not os.path.isdir(model_id):
        return os.path.join(mirror, "models", model_id)
    return model_id


def train_tokenizer(corpus: list[str], vocab_size: int = TINY_VOCAB) -> PreTrainedTokenizerFast:
    """A byte-pair tokenizer with XLM-R's special tokens, trained on the corpus. BPE keeps the offline
    world's frequent words whole (a spaced language's words are single tokens), so a tiny model learns
    words rather than syllables; languages without spaces get multi-character chunks, as in real text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..3, mask last
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        min_frequency=2))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=TINY_MAX_POSITIONS - 2)


def tiny_mlm(name: str, tokenizer) -> XLMRobertaForMaskedLM:
    config = XLMRobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=TINY_MAX_POSITIONS,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, type_vocab_size=1, **TINY_CONFIGS[name])
    return XLMRobertaForMaskedLM(config)


def load_tokenizer(source: str):
    return AutoTokenizer.from_pretrained(source)


def _add_aux(out: dict, module: nn.Module, aux) -> dict:
    """Architectures with an auxiliary loss (MoE: load balancing): total = task loss + weight x aux."""
    value = aux[0](module) if aux is not None else None
    if value is not None:
        out["aux_loss"] = value
        if "loss" in out:
            out["task_loss"] = out["loss"].detach()
            out["loss"] = out["loss"] + aux[1] * value
    return out


@dataclass(frozen=True)
class HeadSpec:
    """What a head predicts: its task, the task's format, and its labels (classes, choices, tags)."""
    task: str
    format: str
    labels: tuple[str, ...]


def encoder_mask(attention_mask: torch.Tensor, padded: bool | None, config) -> torch.Tensor | None:
    """The attention mask to give the encoder, decided without reading the device. Handed the 2D mask,
    transformers checks `mask.all()` to drop it when nothing is padding: a host read of a device tensor
    in every forward. The caller knows from the batch it built on the host (`padded`), so: no padding, no
    mask (SDPA may pick its flash kernel); padding, SDPA's boolean mask built on the device as
    (batch, 1, 1, keys), which transformers passes through as it is. `padded=None`, or attention other
    than SDPA (its masks are additive), leaves it to transformers."""
    if padded is None or config._attn_implementation != "sdpa":
        return attention_mask
    return attention_mask[:, None, None, :].bool() if padded else None


class TaskModel(nn.Module):
    """The encoder with one head per task (one for single-task phases, nine for `multitask`).
    Multiple-choice inputs (examples x choices x tokens) go through the encoder as one row per choice."""

    def __init__(self, encoder: XLMRobertaModel, heads: list[HeadSpec], aux=None, lm_head: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.lm_head = lm_head  # the masked-LM ablation: batches of task MLM train it beside the heads
        cfg = encoder.config
        self.specs = {h.task: h for h in heads}
        self.heads = nn.ModuleDict({h.task: formats.get(h.format).Head(cfg.hidden_size, len(h.labels),
                                                                       cfg.hidden_dropout_prob) for h in heads})
        self.aux = aux  # (loss function, weight), from aux_loss(backbone)

    def forward(self, input_ids, attention_mask, task: str | None = None, padded: bool | None = None,
                **targets) -> dict:
        """`padded`: whether any position of the batch is padding, known where the batch was built
        (encoder_mask); None leaves the check to transformers."""
        if task is None:
            if len(self.heads) != 1:
                raise RuntimeError(f"a model with heads {list(self.heads)} needs the task of the batch")
            task = next(iter(self.heads))
        if task == MLM:
            if self.lm_head is None:
                raise RuntimeError("a masked-LM batch needs a model built with its masked-LM head")
            mask = encoder_mask(attention_mask, padded, self.encoder.config)
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            return _add_aux(masked_lm_loss(self.lm_head, hidden, targets["labels"]), self.encoder, self.aux)
        shape = input_ids.shape
        mask = encoder_mask(attention_mask.view(-1, shape[-1]), padded, self.encoder.config)
        hidden = self.encoder(input_ids=input_ids.view(-1, shape[-1]), attention_mask=mask).last_hidden_state
        logits = self.heads[task](hidden, shape)
        out = {"logits": logits}
        if targets:
            out["loss"] = formats.get(self.specs[task].format).loss(logits, targets)
        return _add_aux(out, self.encoder, self.aux)


class MaskedLM(nn.Module):
    """Wraps XLMRobertaForMaskedLM so every phase's model returns the same dict."""

    def __init__(self, mlm: XLMRobertaForMaskedLM, aux=None):
        super().__init__()
        self.mlm = mlm
        self.aux = aux  # (loss function, weight), from aux_loss(backbone)

    def forward(self, input_ids, attention_mask, labels=None, task=None, padded: bool | None = None) -> dict:
        """The vocabulary projection runs on the masked positions only: with 15% masked it is a sixth of
        the full projection, which dominates a small model's step (and XLM-R's 250k-word vocabulary).
        `padded` as TaskModel's."""
        mask = encoder_mask(attention_mask, padded, self.mlm.config)
        hidden = self.mlm.roberta(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if labels is None:
            return _add_aux({"logits": self.mlm.lm_head(hidden)}, self.mlm, self.aux)
        return _add_aux(masked_lm_loss(self.mlm.lm_head, hidden, labels), self.mlm, self.aux)


def masked_lm_loss(lm_head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> dict:
    """The vocabulary projection on the masked positions only."""
    chosen = labels != -100
    logits = lm_head(hidden[chosen])
    loss = nn.functional.cross_entropy(logits.float(), labels[chosen]) if chosen.any() else hidden.sum() * 0
    return {"loss": loss, "logits": logits}


def freeze_bottom(encoder: XLMRobertaModel, layers: int) -> None:
    """Keep the embeddings and the bottom `layers` layers fixed (0: train everything)."""
    if layers <= 0:
        return
    if layers > len(encoder.encoder.layer):
        raise JobError(f"hyperparameters.frozenLayers: {layers} is more than the encoder's "
                         f"{len(encoder.encoder.layer)} layers")
    for module in [encoder.embeddings, *encoder.encoder.layer[:layers]]:
        for param in module.parameters():
            param.requires_grad = False


def compile_layers(model: nn.Module) -> int:
    """torch.compile per encoder layer, in place (parameter names and checkpoints stay as they are):
    the layers share their code, so one compiled graph serves all of them. An MoE layer's routing reads
    token counts on the host (DeepSpeed's capacity), so there only the attention block and the experts'
    feed-forward blocks are compiled. Returns the number of modules compiled."""
    from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaLayer

    compiled = []
    for layer in (m for m in model.modules() if isinstance(m, XLMRobertaLayer)):
        if isinstance(layer.output, moe.MoEOutput):
            compiled += [layer.attention, *(m for m in layer.output.modules() if isinstance(m, moe.ExpertFFN))]
        else:
            compiled.append(layer)
    for module in compiled:
        module.compile()
    return len(compiled)


def encoder_of(model: nn.Module) -> nn.Module:
    """The part of a phase's model that the next phase inherits."""
    return model.mlm if isinstance(model, MaskedLM) else model.encoder


# -- building a phase's model from its source (backbones/ knows each architecture) ---------------------

def build_encoder(source: str, backbone, world: int, training: bool = True) -> XLMRobertaModel:
    """The encoder for this job, built by its architecture (dense as stored, MoE upcycled or loaded)."""
    return backbones.get(backbone.architecture).encoder(source, backbone, world, training)


def build_mlm(source: str, backbone, world: int) -> XLMRobertaForMaskedLM:
    return backbones.get(backbone.architecture).mlm(source, backbone, world)


def aux_loss(backbone):
    """(loss function, weight) of the architecture's auxiliary loss, or None."""
    arch = backbones.get(backbone.architecture)
    weight = arch.aux_weight(backbone)
    return None if weight is None else (arch.aux_loss, weight)


def save_model(model: nn.Module, tokenizer, directory: Path, backbone, is_main: bool) -> None:
    """Write the inheritable model (masked-LM after pretrain, encoder otherwise), its tokenizer and,
    for classifiers, the heads (used by `evaluate`, dropped by later training phases).
    Called on every rank: MoE experts are spread over ranks."""
    backbones.get(backbone.architecture).save(encoder_of(model), directory, backbone, is_main)
    if is_main:
        tokenizer.save_pretrained(directory)
        if isinstance(model, TaskModel):
            torch.save(model.heads.state_dict(), directory / HEADS_WEIGHTS)
            (directory / HEADS_FILE).write_text(json.dumps([asdict(h) for h in model.specs.values()], indent=1))


def load_heads(directory: str) -> tuple[list[HeadSpec], dict]:
    """The heads a target (or intermediate) job saved: their specs and weights."""
    path, weights = Path(directory) / HEADS_FILE, Path(directory) / HEADS_WEIGHTS
    if not path.is_file():
        raise JobError(f"parent: {Path(directory).parent} has no task heads ({HEADS_FILE}); evaluate needs the "
                         "output of a target job")
    specs = [HeadSpec(h["task"], h["format"], tuple(h["labels"])) for h in json.loads(path.read_text())]
    return specs, torch.load(weights, weights_only=True)


def load_task_model(directory: str, backbone, world: int) -> TaskModel:
    """A trained model with its heads, for evaluation."""
    specs, state = load_heads(directory)
    module = TaskModel(build_encoder(directory, backbone, world, training=False), specs)
    module.heads.load_state_dict(state)
    moe.attach_groups(module)
    return module
