"""Backbones and heads.

A phase's model = an XLM-R encoder + a head for its task format. Phases hand over the encoder only:
the output `model/` directory is a transformers checkpoint the next phase loads with any world size,
and the head is dropped. Hub XLM-R checkpoints are masked-LM checkpoints, and so are ours after
`pretrain`, so one loader serves both.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoTokenizer, PreTrainedTokenizerFast, XLMRobertaConfig,
                          XLMRobertaForMaskedLM, XLMRobertaModel)

# Tiny XLM-R shapes for the offline world: same architecture, sizes a 2-core CPU trains in minutes.
TINY_CONFIGS = {
    "stilts/tiny-xlmr": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256),
    "stilts/mini-xlmr": dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512),
}
TINY_VOCAB = 3000
TINY_MAX_POSITIONS = 130


def hub_path(model_id: str, mirror: str) -> str:
    """A hub id read from the mirror root (hub layout: <mirror>/models/<org>/<name>) when one is set."""
    if mirror and not os.path.isdir(model_id):
        return os.path.join(mirror, "models", model_id)
    return model_id


def train_tokenizer(corpus: list[str], vocab_size: int = TINY_VOCAB) -> PreTrainedTokenizerFast:
    """A SentencePiece-style Unigram tokenizer with XLM-R's special tokens, trained on the corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..3, mask last
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                      max_piece_length=8)
    tok.train_from_iterator(corpus, trainer)
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


def load_mlm(source: str) -> XLMRobertaForMaskedLM:
    return XLMRobertaForMaskedLM.from_pretrained(source)


def load_encoder(source: str) -> XLMRobertaModel:
    return XLMRobertaModel.from_pretrained(source, add_pooling_layer=False)


class ClassificationHead(nn.Module):
    """RoBERTa's head: <s> -> dense -> tanh -> dropout -> labels."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out(x)


class Classifier(nn.Module):
    def __init__(self, encoder: XLMRobertaModel, num_labels: int):
        super().__init__()
        self.encoder = encoder
        cfg = encoder.config
        self.head = ClassificationHead(cfg.hidden_size, num_labels, cfg.hidden_dropout_prob)

    def forward(self, input_ids, attention_mask, labels=None) -> dict:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.head(hidden)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.float(), labels)
        return out


class MaskedLM(nn.Module):
    """Wraps XLMRobertaForMaskedLM so every phase's model returns the same dict."""

    def __init__(self, mlm: XLMRobertaForMaskedLM):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids, attention_mask, labels=None) -> dict:
        out = self.mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        return {"loss": out.loss, "logits": out.logits}


def encoder_of(model: nn.Module) -> nn.Module:
    """The part of a phase's model that the next phase inherits."""
    return model.mlm if isinstance(model, MaskedLM) else model.encoder


def save_encoder(model: nn.Module, tokenizer, directory: Path) -> None:
    """Write the inheritable model (masked-LM after pretrain, encoder otherwise) and its tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder_of(model).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if not isinstance(model, MaskedLM):
        torch.save(model.head.state_dict(), directory / "head.pt")  # kept for inspection, not inherited
