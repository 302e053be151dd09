"""Sparse upcycling: XLM-R feed-forward blocks -> DeepSpeed MoE layers.

Every chosen layer's FFN (intermediate.dense -> act -> output.dense) becomes a
`deepspeed.moe.layer.MoE` whose experts start as copies of that FFN, with a new router; the
layer's dropout, residual and LayerNorm stay as they were. With top-2 gating DeepSpeed
renormalises the two gate values to sum to 1, so identical experts give exactly the dense output:
a freshly upcycled model *is* the dense model. Top-1 scales the expert output by the raw router
probability (about 1/experts at initialisation), so a top-1 upcycled model does not reproduce the
dense one until the router learns; stilts allows it but defaults to top-2.

Checkpoints are independent of the expert-parallel size: non-expert weights in model.safetensors,
experts in experts-*.safetensors keyed by *global* expert id, so a phase trained with ep=2 loads
in a phase with ep=1 (or 8).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import torch
import torch.distributed as dist
from stilts_contract import rules
from stilts_contract.job import JobError
from torch import nn

log = logging.getLogger("stilts_trainer")

MOE_FILE = "moe.json"
_EXPERT_KEY = re.compile(r"(.*\.deepspeed_experts\.)(\d+)(\..*)")


class ExpertFFN(nn.Module):
    """One expert: the dense block's Linear -> activation -> Linear."""

    def __init__(self, dense_in: nn.Linear, act, dense_out: nn.Linear):
        super().__init__()
        self.dense_in, self.act, self.dense_out = dense_in, act, dense_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_out(self.act(self.dense_in(x)))


class MoEOutput(nn.Module):
    """Takes the place of XLMRobertaOutput (the layer's intermediate becomes Identity), so the
    layer's own forward runs unchanged: output(hidden, residual) = LayerNorm(dropout(MoE(hidden)) + residual)."""

    def __init__(self, layer: nn.Module, settings, ep_size: int):
        super().__init__()
        from deepspeed.moe.layer import MoE

        hidden = layer.output.dense.out_features
        expert = ExpertFFN(layer.intermediate.dense, layer.intermediate.intermediate_act_fn, layer.output.dense)
        self.moe = MoE(hidden, expert, num_experts=settings.experts, ep_size=ep_size, k=settings.top_k,
                       capacity_factor=settings.capacity_factor, eval_capacity_factor=settings.eval_capacity_factor,
                       min_capacity=settings.min_capacity, use_residual=settings.use_residual,
                       noisy_gate_policy=None if settings.noisy_gate_policy == "none" else settings.noisy_gate_policy,
                       drop_tokens=settings.drop_tokens)
        # A new router, initialised as sparse upcycling does (normal, std 0.02); with top-2 renormalised
        # gates the upcycled model equals the dense one whatever the router says.
        nn.init.normal_(self.moe.deepspeed_moe.gate.wg.weight, std=0.02)
        self.dropout, self.LayerNorm = layer.output.dropout, layer.output.LayerNorm
        self.aux_loss: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.tokens = self.capacity_tokens = 0
        self.token_mask: torch.Tensor | None = None  # set by the encoder's pre-hook (see upcycle)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """Padding is kept out of routing: real tokens go first, so they claim expert capacity before any
        padding does, and the load-balancing loss and the expert counts are over real tokens only. The
        number of tokens, and so every buffer's shape, stays the same on every rank (expert parallelism
        exchanges them)."""
        gate = self.moe.deepspeed_moe.gate
        # DeepSpeed samples the second expert (Gumbel) whenever the flag is on; keep evaluation deterministic.
        gate.top2_2nd_expert_sampling = self.training
        width = hidden_states.shape[-1]
        tokens = hidden_states.reshape(-1, width)
        used = self.token_mask.reshape(-1).bool() if self.token_mask is not None else None
        self.capacity_tokens = tokens.shape[0]  # what DeepSpeed sizes expert capacity from
        if used is None or used.numel() != tokens.shape[0]:  # no padding (model.encoder_mask): every token
            out, _, _ = self.moe(hidden_states)
            # The same loss and counts as with a mask (DeepSpeed's own count both choices of top-2).
            every = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
            self.aux_loss, self.counts = balance_loss(gate, tokens, every)
            self.tokens = tokens.shape[0]
            return self.LayerNorm(self.dropout(out) + input_tensor)
        # Shapes only, no host reads of the mask (each would stall the host on a GPU, twice per layer):
        # a stable sort puts real tokens first, every token is scattered back, padding's output is zeroed.
        order = torch.argsort((~used).to(torch.int8), stable=True)
        out, _, _ = self.moe(tokens[order].unsqueeze(0))
        out = torch.empty_like(tokens).index_copy(0, order, out.reshape(-1, width)) * used.unsqueeze(1).to(tokens.dtype)
        self.aux_loss, self.counts = balance_loss(gate, tokens, used)
        self.tokens = used.sum()  # a device scalar, read only when load statistics are reported
        return self.LayerNorm(self.dropout(out.reshape(hidden_states.shape)) + input_tensor)


def balance_loss(gate, tokens: torch.Tensor, used: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GShard's load-balancing loss, as DeepSpeed computes it (E x sum over experts of the mean router
    probability times the share of tokens whose first choice it is), and the first-choice counts, over
    the used tokens only (masked means: selecting them would read the mask on the host)."""
    gates = torch.softmax(torch.nn.functional.linear(tokens.float(), gate.wg.weight.float()), dim=1)
    experts = gates.shape[1]
    weight = used.float().unsqueeze(1)
    first = torch.nn.functional.one_hot(gates.argmax(dim=1), experts).float() * weight
    count = weight.sum().clamp(min=1)
    loss = ((gates * weight).sum(0) / count * first.sum(0) / count).sum() * experts
    return loss, first.sum(0).detach().long()


def layer_indices(num_layers: int, settings) -> list[int]:
    if settings.layers:
        bad = [i for i in settings.layers if not 0 <= i < num_layers]
        if bad:
            raise JobError(f"backbone.moe.layers: {bad} out of range for a {num_layers}-layer model")
        return sorted(set(settings.layers))
    return [i for i in range(num_layers) if (i + 1) % settings.every_n_layers == 0]


def effective_ep_size(settings, world: int, training: bool = True) -> int:
    """Training uses the configured expert-parallel size, which must divide the world size.
    Evaluation takes the largest size that fits (e.g. 1 when evaluating with one process):
    checkpoints load at any size."""
    problem = rules.ep_divides_world(settings.expert_parallel_size, world) if training else None
    if problem:
        raise JobError(f"backbone.{problem}")
    ep = math.gcd(settings.expert_parallel_size, world)
    if ep != settings.expert_parallel_size:
        log.info("expert-parallel size %d does not fit world size %d; using %d", settings.expert_parallel_size,
                 world, ep)
    return ep


def upcycle(encoder: nn.Module, settings, ep_size: int) -> list[int]:
    """Turn the chosen layers of an XLMRobertaModel into MoE layers, in place. A pre-hook hands each
    forward's attention mask to the MoE layers, so whoever calls the encoder keeps padding out of routing."""
    layers = layer_indices(len(encoder.encoder.layer), settings)
    for i in layers:
        layer = encoder.encoder.layer[i]
        layer.output = MoEOutput(layer, settings, ep_size)
        layer.intermediate = nn.Identity()
    encoder.register_forward_pre_hook(_share_token_mask, with_kwargs=True)
    return layers


def _share_token_mask(encoder: nn.Module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 4:  # model.encoder_mask's (batch, 1, 1, keys): the padding itself
        mask = mask[:, 0, 0, :]
    for layer in moe_layers(encoder):
        layer.token_mask = mask
    return None


def attach_groups(module: nn.Module) -> None:
    """Expert-parallel process groups for a model used without a DeepSpeed engine (evaluation);
    deepspeed.initialize attaches them itself and refuses a second attach."""
    for layer in moe_layers(module):
        if layer.moe.deepspeed_moe.gate.ep_group is None:
            layer.moe.set_deepspeed_parallelism()


def moe_layers(module: nn.Module) -> list[MoEOutput]:
    return [m for m in module.modules() if isinstance(m, MoEOutput)]


def aux_loss(module: nn.Module) -> torch.Tensor | None:
    losses = [m.aux_loss for m in moe_layers(module) if m.aux_loss is not None]
    return torch.stack([l.float() for l in losses]).sum() if losses else None


def load_stats(module: nn.Module) -> dict:
    """Share of routed tokens per expert (summed over layers) and the share of routes dropped for capacity."""
    layers = [m for m in moe_layers(module) if m.counts is not None]
    if not layers:
        return {}
    total = torch.stack([m.counts.float().cpu() for m in layers]).sum(0)
    dropped, routes = 0.0, 0.0
    for m in layers:
        gate = m.moe.deepspeed_moe.gate
        k = gate.k
        if gate.drop_tokens:
            cf = gate.capacity_factor if m.training else gate.eval_capacity_factor
            capacity = max(math.ceil(m.capacity_tokens / len(m.counts) * cf * k), gate.min_capacity)
            dropped += float(torch.clamp(m.counts.float().cpu() - capacity, min=0).sum())
        routes += float(m.tokens) * k
    return {"expert_share": (total / total.sum().clamp(min=1)).tolist(), "dropped_share": dropped / max(routes, 1)}


# -- checkpoints -------------------------------------------------------------------------------------

def _ep_rank(layer: MoEOutput) -> int:
    """This rank's place in its expert-parallel group. DeepSpeed's default layout makes groups of
    consecutive ranks ([0..ep), [ep..2ep), ...); computed here so it is known before DeepSpeed
    creates the groups (a checkpoint is loaded before deepspeed.initialize)."""
    return dist.get_rank() % layer.moe.ep_size


def save(module: nn.Module, directory: Path, settings_dump: dict, layers: list[int], is_main: bool) -> None:
    """Called on every rank: rank 0 writes non-expert weights; each rank of the first expert-parallel
    group writes its experts under their global ids."""
    from safetensors.torch import save_file

    moe = moe_layers(module)
    ep_size = moe[0].moe.ep_size
    local = moe[0].moe.num_local_experts
    ep_rank = _ep_rank(moe[0])
    raw = module.state_dict()
    tied, first_key = {}, {}
    # Tied weights (MLM decoder = embeddings) are stored once, under the encoder's name: an encoder
    # loaded from this checkpoint drops the head.
    for key in sorted(raw, key=lambda k: k.startswith("lm_head.")):
        value = raw[key]
        ident = (value.data_ptr(), value.storage_offset(), tuple(value.shape))
        if ident in first_key:
            tied[key] = first_key[ident]
        else:
            first_key[ident] = key
    state = {k: v.detach().cpu().contiguous() for k, v in raw.items() if k not in tied}
    experts, dense = {}, {}
    for key, value in state.items():
        match = _EXPERT_KEY.match(key)
        if match:
            experts[f"{match[1]}{ep_rank * local + int(match[2])}{match[3]}"] = value
        else:
            dense[key] = value
    if dist.get_rank() < ep_size:  # the first expert-parallel group holds every expert once
        save_file(experts, str(directory / f"experts-{ep_rank:05d}.safetensors"))
    if is_main:
        save_file(dense, str(directory / "model.safetensors"))
        module.config.save_pretrained(directory)
        (directory / MOE_FILE).write_text(json.dumps({"settings": settings_dump, "layers": layers, "tied": tied,
                                                      "experts": moe[0].moe.num_experts}, indent=2))


def is_moe_checkpoint(source: str) -> bool:
    return (Path(source) / MOE_FILE).is_file()


def load_state(module: nn.Module, source: str, prefix_from: str = "", drop_prefix: str = "") -> None:
    """Load an MoE checkpoint into an upcycled module, taking this rank's experts by global id.
    `prefix_from` is stripped from stored keys (masked-LM -> encoder); keys under `drop_prefix`
    (the masked-LM head, when loading an encoder) are not inherited."""
    from safetensors.torch import load_file

    src = Path(source)
    meta = json.loads((src / MOE_FILE).read_text())
    moe = moe_layers(module)
    if moe[0].moe.num_experts != meta["experts"]:
        raise JobError(f"backbone.moe.experts: the checkpoint {source} has {meta['experts']} experts, "
                         f"the job asks for {moe[0].moe.num_experts}")
    local = moe[0].moe.num_local_experts
    first = _ep_rank(moe[0]) * local
    state = {}
    for key, value in load_file(str(src / "model.safetensors")).items():
        if not (drop_prefix and key.startswith(drop_prefix)):
            state[key.removeprefix(prefix_from)] = value
    for shard in sorted(src.glob("experts-*.safetensors")):
        for key, value in load_file(str(shard)).items():
            match = _EXPERT_KEY.match(key)
            gid = int(match[2])
            if first <= gid < first + local:
                state[f"{match[1]}{gid - first}{match[3]}".removeprefix(prefix_from)] = value
    for alias, key in meta.get("tied", {}).items():
        alias, key = alias.removeprefix(prefix_from), key.removeprefix(prefix_from)
        if key in state and not (drop_prefix and alias.startswith(drop_prefix)):
            state[alias] = state[key]
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise JobError(f"parent: MoE checkpoint {source} does not match the model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); were backbone.moe.layers changed?")
