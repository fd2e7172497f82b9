"""Structured, GQA-aware pruning of a Llama: whole query heads / key-value groups, MLP channels and (optionally) the
hidden width, ranked by weight magnitude or first-order Taylor saliency, cut out with torch-pruning.

    python -m sqlcopilot_core.prune --ratio 0.5                       # the tiny test model
    python -m sqlcopilot_core.prune --model work/smollm2_base --ratio 0.25 --prune-hidden --out /tmp/pruned
    python -m sqlcopilot_core.prune compare --model M --spider-dir D --ratio 0.5 --holdout 200   # global vs sensitivity
        [--variants global uniform sensitivity]

Per-layer widths come from the ranking (PruneConfig.allocation 'saliency': least salient structures anywhere go
first) or from measured sensitivity ('sensitivity', sqlcopilot_core/sensitivity.py: the calibration loss rise of
removing part of each layer's key/value groups or MLP channels decides how much each layer keeps); in both, the
criterion picks which heads and channels of a layer go.

How the surgery is split (measured with torch-pruning 1.6.1 and transformers 5.23): torch-pruning's DependencyGraph
couples the residual stream (embedding, every q/k/v/gate/up input, o/down output, RMSNorm weights, lm_head) and each
MLP (gate/up rows with the down column) exactly, so those go through `DependencyGraph.get_pruning_group`, and we
check the group names exactly the modules we expect. Inside attention the graph treats grouped-query sharing
(repeat_kv / sdpa) as a channel identity: a group rooted at query head 0 also removes key/value channels 0..15, a
value group never reaches o_proj, and with sdpa plus the KV cache the group search does not terminate. So query
heads and key/value groups are cut with torch-pruning's functional pruners (prune_linear_out/in_channels) at
indices we compute from whole heads, keeping every layer's query heads per group equal (rotary needs whole heads).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn
from tqdm import tqdm
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from sqlcopilot_core.config import ConfigError
from sqlcopilot_core.modeling import count_parameters, layer_shapes

RATIO_TOLERANCE = 0.02
CRITERIA = ("magnitude", "taylor")
ALLOCATIONS = ("saliency", "sensitivity")

Calibration = Callable[[nn.Module], torch.Tensor] | Iterable[torch.Tensor | Mapping[str, torch.Tensor]]


class PruneError(ValueError):
    """Pruning cannot reach the request or left an inconsistent model; the message says which and what to change."""


@dataclass(frozen=True)
class PruneConfig:
    ratio: float = 0.5
    """Fraction of ALL parameters kept (embedding included), 0 < ratio <= 1; reached within 2%."""
    criterion: str = "magnitude"
    """'magnitude' ranks a structure by the sum of its squared weights (the squared L2 norm: same order as the norm,
    and it adds up over a group); 'taylor' by the sum of |weight * gradient| over calibration batches."""
    prune_heads: bool = True
    """Remove whole query heads (the same number in every key/value group) and whole key/value groups."""
    prune_mlp: bool = True
    """Remove MLP channels (a gate row, an up row and a down column); fine-grained, so it absorbs the rounding."""
    prune_hidden: bool = False
    """Also shrink the hidden (residual) width: embedding columns, every projection's input or output, RMSNorm
    weights. head_dim never changes. Needed below ~25% for SmolLM2-135M, whose tied embedding is 21% of it."""
    calibration_batches: int = 4
    """How many calibration batches the taylor criterion accumulates gradients over."""
    calibration_batch_size: int = 2
    """Sequences per batch built by `make_calibration_batches`."""
    min_heads_per_group: int = 1
    """Query heads every kept key/value group keeps at least (a layer always keeps at least one group)."""
    global_ranking: bool = True
    """Rank heads and MLP channels across layers, so layers may end up with different widths; False cuts every
    layer to the same shape, each choosing its own least important structures."""
    seed: int = 0
    """Picks which sequences `make_calibration_batches` uses."""
    allocation: str = "saliency"
    """How many heads and channels each layer keeps: 'saliency' (the criterion's ranking decides, across layers when
    global_ranking, else every layer alike); 'sensitivity' (a layer whose calibration loss rises more when part of
    its attention or MLP is removed keeps more of it, at the same total; the criterion still picks which heads and
    channels go). 'sensitivity' measures on `sensitivity_examples` packed Spider train examples."""
    sensitivity_examples: int = 256
    """Spider train examples (chosen with `seed`) whose gold-SQL loss the sensitivity measurement compares."""
    sensitivity_per_database: int | None = 8
    """At most this many of the sensitivity examples come from one database (None: no limit), so several questions
    share each pack's schema and a pass reads fewer tokens per example (a pass is a forward over all of them)."""
    sensitivity_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    """Fractions of each layer's key/value groups and MLP channels (and of the hidden width) removed, one loss pass
    each (rounded to whole groups, repeats dropped): more fractions, a better curve, more passes."""
    sensitivity_max_seq_len: int = 1024
    """Longest pack (schema + questions + SQL) of the sensitivity batches, in tokens."""

    def __post_init__(self):
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"PruneConfig.ratio: {self.ratio} must be in (0, 1] (the fraction of parameters kept)")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"PruneConfig.criterion: {self.criterion!r} is not one of {list(CRITERIA)}")
        for name in ("calibration_batches", "calibration_batch_size", "min_heads_per_group"):
            if getattr(self, name) < 1:
                raise ConfigError(f"PruneConfig.{name}: {getattr(self, name)} must be at least 1")
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"PruneConfig.allocation: {self.allocation!r} is not one of {list(ALLOCATIONS)}")
        per_database = self.sensitivity_per_database
        if isinstance(per_database, str):  # from a --set override
            per_database = None if per_database.lower() in ("null", "none", "") else per_database
            if isinstance(per_database, str) and per_database.isdigit():
                per_database = int(per_database)
            object.__setattr__(self, "sensitivity_per_database", per_database)
        if per_database is not None and not (isinstance(per_database, int) and per_database >= 1):
            raise ConfigError(f"PruneConfig.sensitivity_per_database: {per_database!r} must be an integer >= 1 "
                              f"or null")
        if self.sensitivity_examples < 1 or self.sensitivity_max_seq_len < 64:
            raise ConfigError(f"PruneConfig.sensitivity_examples ({self.sensitivity_examples}) must be >= 1 and "
                              f"sensitivity_max_seq_len ({self.sensitivity_max_seq_len}) >= 64")
        fractions = tuple(self.sensitivity_fractions)
        if not fractions or not all(isinstance(f, (int, float)) and 0 < f < 1 for f in fractions):
            raise ConfigError(f"PruneConfig.sensitivity_fractions: {list(fractions)} must be one or more fractions "
                              f"in (0, 1)")
        object.__setattr__(self, "sensitivity_fractions", tuple(float(f) for f in fractions))
        if not (self.prune_heads or self.prune_mlp or self.prune_hidden) and self.ratio < 1:
            raise ConfigError("PruneConfig: prune_heads, prune_mlp and prune_hidden are all off, nothing can shrink")


@dataclass
class LayerPlan:
    """What one decoder layer keeps, as original indices in ascending order."""
    kv_heads: list[int]
    query_heads: list[int]
    mlp_channels: list[int]


@dataclass
class PrunePlan:
    """Everything `apply_plan` cuts, and the parameter count it will leave."""
    layers: list[LayerPlan]
    hidden_channels: list[int]
    target_parameters: int
    planned_parameters: int
    seconds: dict[str, float] = field(default_factory=dict)
    allocation: dict = field(default_factory=dict)
    """With allocation 'sensitivity': the measured sensitivity and the fraction of each structure removed."""


def make_calibration_batches(sequences: Sequence[Sequence[int]], config: PruneConfig,
                             pad_token_id: int) -> list[dict[str, torch.Tensor]]:
    """Up to `calibration_batches` right-padded batches of token id sequences (chosen with `seed`); pads get
    label -100 so they add no loss."""
    usable = [list(s) for s in sequences if len(s) >= 2]
    if not usable:
        raise PruneError("calibration: no token sequence has 2 or more tokens")
    random.Random(config.seed).shuffle(usable)
    usable = usable[:config.calibration_batches * config.calibration_batch_size]
    batches = []
    for start in range(0, len(usable), config.calibration_batch_size):
        chunk = usable[start:start + config.calibration_batch_size]
        length = max(len(s) for s in chunk)
        input_ids = torch.full((len(chunk), length), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, seq in enumerate(chunk):
            input_ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        batches.append({"input_ids": input_ids, "attention_mask": mask,
                        "labels": input_ids.masked_fill(mask == 0, -100)})
    return batches


def _batch_loss(model: nn.Module, batch: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Language-model loss of a batch given as input ids or as a dict with input_ids (+ labels, attention_mask)."""
    if isinstance(batch, torch.Tensor):
        return model(input_ids=batch, labels=batch, use_cache=False).loss
    if "input_ids" not in batch:
        raise PruneError(f"calibration batch has keys {sorted(batch)}; it needs input_ids")
    labels = batch.get("labels")
    if labels is None:
        labels = batch["input_ids"]
        if "attention_mask" in batch:
            labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
    return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels,
                 use_cache=False).loss


CALIBRATION_TOKENS = 512


def calibration_sequences(train_dir: Path, tokenizer, count: int, seed: int, prompt=None) -> list[list[int]]:
    """Prompt + gold SQL token ids of `count` Spider train examples (Taylor importance needs real gradients), with
    the prompt the model was trained on (`prompt`: its PromptSettings)."""
    from sqlcopilot_core.prompting import PromptSettings
    from sqlcopilot_core.spider import load_split

    examples = load_split(train_dir, "train")
    chosen = random.Random(seed).sample(examples, min(count, len(examples)))
    return example_sequences(chosen, tokenizer, prompt or PromptSettings())


def accumulate_gradients(model: nn.Module, calibration: Calibration | None, config: PruneConfig) -> int:
    """Sum loss gradients over `calibration_batches` batches into .grad; returns how many batches were used.

    `calibration` is either batches (input id tensors or dicts, see `_batch_loss`) or a callable model -> loss that
    is called once per batch (it should draw a fresh batch each call)."""
    if calibration is None:
        raise PruneError("criterion 'taylor' needs calibration batches (or a model -> loss callable); "
                         "pass calibration=... or use criterion 'magnitude'")
    model.zero_grad(set_to_none=True)
    if callable(calibration):
        losses = (calibration(model) for _ in range(config.calibration_batches))
    else:
        losses = (_batch_loss(model, batch) for batch in itertools.islice(calibration, config.calibration_batches))
    used = 0
    with torch.enable_grad():
        for loss in tqdm(losses, total=config.calibration_batches, desc="taylor calibration", leave=False):
            if not torch.isfinite(loss):
                raise PruneError(f"calibration batch {used}: loss is {loss.item()}, cannot rank by gradients")
            loss.backward()
            used += 1
    if used == 0:
        raise PruneError("calibration yielded no batches")
    return used


def weight_saliency(model: nn.Module, config: PruneConfig, calibration: Calibration | None = None
                    ) -> dict[str, torch.Tensor]:
    """Per parameter name (tied weights once), a float32 tensor of per-element saliency: w^2 or |w * grad|."""
    params = dict(model.named_parameters())
    for param in params.values():
        param.requires_grad_(True)
    if config.criterion == "magnitude":
        return {name: p.detach().float() ** 2 for name, p in params.items()}
    accumulate_gradients(model, calibration, config)
    saliency = {}
    for name, param in params.items():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        saliency[name] = (param.detach().float() * grad.float()).abs()
    model.zero_grad(set_to_none=True)
    return saliency


def _row_blocks(saliency: dict[str, torch.Tensor], prefix: str, blocks: int) -> torch.Tensor:
    """Saliency of `blocks` equal runs of output rows of a linear layer (weight and bias)."""
    total = saliency[f"{prefix}.weight"].reshape(blocks, -1).sum(1)
    bias = saliency.get(f"{prefix}.bias")
    return total if bias is None else total + bias.reshape(blocks, -1).sum(1)


def _column_blocks(saliency: dict[str, torch.Tensor], prefix: str, blocks: int) -> torch.Tensor:
    """Saliency of `blocks` equal runs of input columns of a linear layer."""
    weight = saliency[f"{prefix}.weight"]
    return weight.reshape(weight.shape[0], blocks, -1).sum((0, 2))


@dataclass(frozen=True)
class _Geometry:
    """Parameter counts as a function of widths, so a plan can be sized before any surgery."""
    vocab: int
    head_dim: int
    hidden: int
    shapes: tuple[tuple[int, int, int], ...]  # per layer: query heads, key/value heads, MLP width
    attention_bias: bool
    mlp_bias: bool
    tied: bool
    hidden_step: int  # the hidden width must stay a multiple of this

    def attention(self, hidden: int, heads: int, kv_heads: int) -> int:
        bias = self.head_dim * (heads + 2 * kv_heads) + hidden if self.attention_bias else 0
        return hidden * self.head_dim * 2 * (heads + kv_heads) + bias

    def mlp(self, hidden: int, width: int) -> int:
        return 3 * hidden * width + (2 * width + hidden if self.mlp_bias else 0)

    def fixed(self, hidden: int) -> int:
        return hidden * (self.vocab * (1 if self.tied else 2) + 2 * len(self.shapes) + 1)

    def total(self, hidden: int, shapes: Sequence[tuple[int, int, int]]) -> int:
        return self.fixed(hidden) + sum(self.attention(hidden, h, k) + self.mlp(hidden, w) for h, k, w in shapes)


def _geometry(model: LlamaForCausalLM) -> _Geometry:
    """The model's sizes; refuses a model with parameters the count formula does not know (it would mis-size)."""
    config = model.config
    shapes = tuple((s["num_attention_heads"], s["num_key_value_heads"], s["intermediate_size"])
                   for s in layer_shapes(model))
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    embedding = model.model.embed_tokens
    geometry = _Geometry(vocab=embedding.num_embeddings, head_dim=model.model.layers[0].self_attn.head_dim,
                         hidden=embedding.embedding_dim, shapes=shapes,
                         attention_bias=bool(config.attention_bias), mlp_bias=bool(config.mlp_bias), tied=tied,
                         hidden_step=config.num_attention_heads)
    counted = count_parameters(model)
    if geometry.total(geometry.hidden, shapes) != counted:
        raise PruneError(f"model has {counted} parameters but a Llama of these shapes has "
                         f"{geometry.total(geometry.hidden, shapes)}; this pruner only knows plain Llama layers")
    return geometry


def _minimum_shapes(geometry: _Geometry, config: PruneConfig) -> list[tuple[int, int, int]]:
    """The narrowest layers the config allows: one key/value group with min_heads_per_group, one MLP channel."""
    minimum = []
    for heads, kv_heads, width in geometry.shapes:
        per_group = min(config.min_heads_per_group, heads // kv_heads)
        minimum.append((per_group, 1) if config.prune_heads else (heads, kv_heads))
        minimum[-1] = (*minimum[-1], 1 if config.prune_mlp else width)
    return minimum


def _choose_hidden(geometry: _Geometry, config: PruneConfig, target: int) -> int:
    """Hidden width: sqrt(ratio) of the original (embedding shrinks by s, layers by s * their own cut), widened or
    narrowed only as far as the layer widths need to land on the target. A multiple of the config's head count,
    because transformers' LlamaConfig refuses to save or load anything else."""
    full, minimum, step = geometry.shapes, _minimum_shapes(geometry, config), geometry.hidden_step
    if not config.prune_hidden:
        hidden = geometry.hidden
    else:
        def slope(shapes):
            return geometry.total(1, shapes) - geometry.total(0, shapes)

        hidden = step * round(math.sqrt(config.ratio) * geometry.hidden / step)
        if geometry.total(hidden, full) < target:
            hidden = step * math.ceil((target - geometry.total(0, full)) / slope(full) / step)
        if geometry.total(hidden, minimum) > target:
            hidden = step * math.floor((target - geometry.total(0, minimum)) / slope(minimum) / step)
        hidden = min(max(hidden, step * math.ceil(min(geometry.head_dim, geometry.hidden) / step)), geometry.hidden)
    lowest = geometry.total(hidden, minimum)
    if lowest > target * (1 + RATIO_TOLERANCE):
        original = geometry.total(geometry.hidden, full)
        advice = ("lower min_heads_per_group or enable prune_heads/prune_mlp" if config.prune_hidden else
                  f"the embedding alone is {geometry.fixed(hidden) / original:.1%} of the model; "
                  "enable prune_hidden to go lower")
        raise PruneError(f"ratio {config.ratio} is unreachable: the minimum reachable ratio with these settings is "
                         f"{lowest / original:.3f}; {advice}")
    return hidden


class _AttentionCutter:
    """Greedy removal of the least salient attention structure per parameter, until a parameter budget.

    A layer's state maps each kept key/value group to its kept query heads (local index, most salient first).
    Two kinds of cut keep grouped-query attention valid: one query head from every kept group, or a whole group."""

    def __init__(self, geometry: _Geometry, hidden: int, saliency: dict[str, torch.Tensor], config: PruneConfig):
        self.geometry, self.hidden, self.config = geometry, hidden, config
        self.head_scores, self.kv_scores, self.groups = [], [], []
        for index, (heads, kv_heads, _) in enumerate(geometry.shapes):
            prefix = f"model.layers.{index}.self_attn"
            head = _row_blocks(saliency, f"{prefix}.q_proj", heads) + _column_blocks(saliency, f"{prefix}.o_proj",
                                                                                      heads)
            kv = (_row_blocks(saliency, f"{prefix}.k_proj", kv_heads)
                  + _row_blocks(saliency, f"{prefix}.v_proj", kv_heads))
            by_group = head.reshape(kv_heads, heads // kv_heads)
            self.head_scores.append(by_group)
            self.kv_scores.append(kv)
            self.groups.append({g: torch.argsort(by_group[g], descending=True, stable=True).tolist()
                                for g in range(kv_heads)})

    def shape(self, layer: int) -> tuple[int, int]:
        groups = self.groups[layer]
        return len(groups) * len(next(iter(groups.values()))), len(groups)

    def parameters(self) -> int:
        return sum(self.geometry.attention(self.hidden, *self.shape(i)) for i in range(len(self.groups)))

    def _head_cut(self, layer: int):
        """Drop the least salient query head of every kept group: (saliency, new shape, apply) or None."""
        groups = self.groups[layer]
        heads, kv_heads = self.shape(layer)
        if heads // kv_heads <= self.config.min_heads_per_group:
            return None
        score = sum(float(self.head_scores[layer][g, kept[-1]]) for g, kept in groups.items())
        return score, (heads - kv_heads, kv_heads), lambda: [kept.pop() for kept in groups.values()]

    def _group_cut(self, layer: int):
        """Drop the least salient key/value group with its query heads: (saliency, new shape, apply) or None."""
        groups = self.groups[layer]
        heads, kv_heads = self.shape(layer)
        if kv_heads <= 1:
            return None
        totals = {g: float(self.kv_scores[layer][g] + self.head_scores[layer][g, kept].sum())
                  for g, kept in groups.items()}
        weakest = min(totals, key=totals.get)
        return totals[weakest], (heads - heads // kv_heads, kv_heads - 1), lambda: groups.pop(weakest)

    def _options(self, scope: list[int]):
        """(saliency, parameters removed, applies) for each kind of cut possible in every layer of `scope`."""
        for make_cut in (self._head_cut, self._group_cut):
            cuts = [(layer, make_cut(layer)) for layer in scope]
            if all(cut is not None for _, cut in cuts):
                removed = sum(self.geometry.attention(self.hidden, *self.shape(layer))
                              - self.geometry.attention(self.hidden, *cut[1]) for layer, cut in cuts)
                yield sum(cut[0] for _, cut in cuts), removed, [cut[2] for _, cut in cuts]

    def cut_to(self, budget: int) -> None:
        """Apply the cut with least saliency per parameter among those that bring the count closer to `budget`."""
        layers = list(range(len(self.groups)))
        scopes = [[i] for i in layers] if self.config.global_ranking else [layers]
        self._cut(scopes, self.parameters() - budget)

    def cut_layer_to(self, layer: int, budget: float) -> None:
        """Cut one layer's attention toward `budget` parameters, least salient cut per parameter first."""
        self._cut([[layer]], self.geometry.attention(self.hidden, *self.shape(layer)) - budget)

    def removal_order(self, layer: int) -> tuple[list[int], list[int]]:
        """The layer's key/value groups, and its query heads, least salient first (for the sensitivity masks)."""
        kv, heads = self.kv_scores[layer], self.head_scores[layer]
        groups = (kv + heads.sum(1)).argsort(stable=True).tolist()
        return groups, heads.flatten().argsort(stable=True).tolist()

    def _cut(self, scopes: list[list[int]], excess: float) -> None:
        while excess > 0:
            options = [option for scope in scopes for option in self._options(scope) if option[1] < 2 * excess]
            if not options:
                return
            _, removed, applies = min(options, key=lambda option: option[0] / option[1])
            for apply in applies:
                apply()
            excess -= removed

    def kept(self, layer: int) -> tuple[list[int], list[int]]:
        """Original indices of the kept key/value heads and query heads of `layer`."""
        per_group = self.geometry.shapes[layer][0] // self.geometry.shapes[layer][1]
        groups = self.groups[layer]
        return sorted(groups), sorted(g * per_group + j for g, kept in groups.items() for j in kept)


def _plan_mlp(geometry: _Geometry, hidden: int, saliency: dict[str, torch.Tensor], config: PruneConfig,
              budget: int) -> list[list[int]]:
    """Kept MLP channels per layer: as many as `budget` parameters pay for, most salient first."""
    widths = [width for *_, width in geometry.shapes]
    if not config.prune_mlp:
        return [list(range(width)) for width in widths]
    scores = [_mlp_scores(saliency, i, w) for i, w in enumerate(widths)]
    per_channel = geometry.mlp(hidden, 1) - geometry.mlp(hidden, 0)
    channels = round((budget - sum(geometry.mlp(hidden, 0) for _ in widths)) / per_channel)
    if not config.global_ranking:
        per_layer = max(1, round(channels / len(widths)))
        return [sorted(s.topk(min(per_layer, len(s))).indices.tolist()) for s in scores]
    channels = min(max(channels, len(widths)), sum(widths))
    # every layer keeps its best channel (a zero-width MLP cannot be saved); the rest go to the most salient anywhere
    forced = [s.clone().index_fill_(0, s.argmax().view(1), math.inf) for s in scores]
    chosen = torch.cat(forced).topk(channels).indices
    offsets = list(itertools.accumulate(widths, initial=0))
    return [sorted((chosen[(chosen >= lo) & (chosen < hi)] - lo).tolist()) for lo, hi in zip(offsets, offsets[1:])]


def _channels(heads: Sequence[int], head_dim: int) -> list[int]:
    """Channel indices of whole heads: head h owns h*head_dim .. (h+1)*head_dim-1."""
    return [h * head_dim + c for h in heads for c in range(head_dim)]


def _plan_hidden(geometry: _Geometry, hidden: int, saliency: dict[str, torch.Tensor],
                 layers: list[LayerPlan]) -> list[int]:
    """Kept hidden channels, ranked by their saliency in every weight the rest of the plan keeps."""
    if hidden == geometry.hidden:
        return list(range(hidden))
    return sorted(_hidden_scores(geometry, saliency, layers).topk(hidden).indices.tolist())


def _hidden_scores(geometry: _Geometry, saliency: dict[str, torch.Tensor], layers: list[LayerPlan]) -> torch.Tensor:
    """Saliency of each hidden channel summed over every weight of it that `layers` keep."""
    total = saliency["model.embed_tokens.weight"].sum(0) + saliency["model.norm.weight"]
    if "lm_head.weight" in saliency:
        total = total + saliency["lm_head.weight"].sum(0)
    for index, plan in enumerate(layers):
        prefix = f"model.layers.{index}"
        query, kv = _channels(plan.query_heads, geometry.head_dim), _channels(plan.kv_heads, geometry.head_dim)
        for name, rows in (("self_attn.q_proj", query), ("self_attn.k_proj", kv), ("self_attn.v_proj", kv),
                           ("mlp.gate_proj", plan.mlp_channels), ("mlp.up_proj", plan.mlp_channels)):
            total = total + saliency[f"{prefix}.{name}.weight"][rows].sum(0)
        for name, columns in (("self_attn.o_proj", query), ("mlp.down_proj", plan.mlp_channels)):
            total = total + saliency[f"{prefix}.{name}.weight"][:, columns].sum(1)
            total = total + saliency.get(f"{prefix}.{name}.bias", 0)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            total = total + saliency[f"{prefix}.{norm}.weight"]
    return total


def _keep_everything(geometry: _Geometry) -> list[LayerPlan]:
    return [LayerPlan(list(range(kv)), list(range(heads)), list(range(width))) for heads, kv, width in geometry.shapes]


def plan_pruning(model: LlamaForCausalLM, config: PruneConfig, calibration: Calibration | None = None,
                 sensitivity_batches: Sequence | None = None, sensitivity: dict | None = None,
                 saliency: dict[str, torch.Tensor] | None = None) -> PrunePlan:
    """Decide what to keep so the parameter count lands within 2% of ratio * original; the model is not changed
    (taylor runs backward passes, unless given `saliency`: weight_saliency of this model with the same criterion and
    calibration; allocation 'sensitivity' runs masked forward passes over `sensitivity_batches`, packed batches from
    sensitivity.packed_batches, unless given `sensitivity`: an earlier measurement of this model with the same
    criterion). Raises PruneError when the ratio cannot be reached."""
    geometry = _geometry(model)
    original = geometry.total(geometry.hidden, geometry.shapes)
    target = round(config.ratio * original)
    if config.ratio == 1:
        return PrunePlan(_keep_everything(geometry), list(range(geometry.hidden)), target, original)
    hidden = _choose_hidden(geometry, config, target)
    started = time.perf_counter()
    if saliency is None:
        saliency = weight_saliency(model, config, calibration)
    seconds = {"saliency": time.perf_counter() - started}
    width_budget = target - geometry.fixed(hidden)
    cutter = _AttentionCutter(geometry, hidden, saliency, config)
    allocation = {}
    if config.allocation == "sensitivity":
        allocation = ({"sensitivity": sensitivity} if sensitivity is not None else
                      _measure(model, geometry, saliency, cutter, config, sensitivity_batches))
        seconds["sensitivity"] = time.perf_counter() - started - seconds["saliency"]
        mlp_channels = _allocate_by_sensitivity(geometry, hidden, saliency, config, cutter, width_budget, allocation)
    else:
        mlp_full = sum(geometry.mlp(hidden, width) for *_, width in geometry.shapes)
        if config.prune_heads and config.prune_mlp:
            attention_full = cutter.parameters()
            cutter.cut_to(round(width_budget * attention_full / (attention_full + mlp_full)))
        elif config.prune_heads:
            cutter.cut_to(width_budget - mlp_full)
        mlp_channels = _plan_mlp(geometry, hidden, saliency, config, width_budget - cutter.parameters())
    layers = [LayerPlan(*cutter.kept(index), channels) for index, channels in enumerate(mlp_channels)]
    hidden_channels = _plan_hidden(geometry, hidden, saliency, layers)
    planned = geometry.total(hidden, [(len(p.query_heads), len(p.kv_heads), len(p.mlp_channels)) for p in layers])
    if abs(planned / target - 1) > RATIO_TOLERANCE:
        raise PruneError(f"ratio {config.ratio}: the closest plan keeps {planned / original:.3f} of the parameters, "
                         f"more than {RATIO_TOLERANCE:.0%} off; heads are coarse, enable prune_mlp (or prune_hidden)")
    seconds["plan"] = time.perf_counter() - started - sum(seconds.values())
    return PrunePlan(layers, hidden_channels, target, planned, seconds, allocation)


def _measure(model, geometry: _Geometry, saliency: dict[str, torch.Tensor], cutter: _AttentionCutter,
             config: PruneConfig, batches: Sequence | None) -> dict:
    """The sensitivity of every layer's attention and MLP (and of the hidden width), structures masked in the
    order the criterion would remove them."""
    from sqlcopilot_core.sensitivity import measure_sensitivity

    if not batches:
        raise PruneError("PruneConfig.allocation 'sensitivity' needs packed calibration batches "
                         "(sensitivity_batches=sensitivity.packed_batches(...)); none were given")
    layers = range(len(geometry.shapes))
    mlp = [_mlp_scores(saliency, i, width) for i, (*_, width) in enumerate(geometry.shapes)]
    orders = {"attention": [cutter.removal_order(i)[0] for i in layers],
              "attention_heads": [cutter.removal_order(i)[1] for i in layers],
              "mlp": [scores.argsort(stable=True).tolist() for scores in mlp],
              "hidden": _hidden_scores(geometry, saliency, _keep_everything(geometry)).argsort(stable=True).tolist()}
    was_training = model.training
    try:
        return {"sensitivity": measure_sensitivity(model, batches, orders, config.sensitivity_fractions,
                                                   measure_hidden=config.prune_hidden)}
    finally:
        model.train(was_training)


def _allocate_by_sensitivity(geometry: _Geometry, hidden: int, saliency: dict[str, torch.Tensor],
                             config: PruneConfig, cutter: _AttentionCutter, width_budget: int,
                             allocation: dict) -> list[list[int]]:
    """Cut each layer's attention to its share of the budget and return each layer's kept MLP channels; the shares
    remove parameters where the measured loss rise per parameter is least (sensitivity.allocate). Records the
    removed fractions in `allocation`."""
    from sqlcopilot_core.sensitivity import allocate, rise_curve

    measured, minimum = allocation["sensitivity"]["layers"], _minimum_shapes(geometry, config)
    per_channel = geometry.mlp(hidden, 1) - geometry.mlp(hidden, 0)
    structures = []
    for index, (heads, kv_heads, width) in enumerate(geometry.shapes):
        if config.prune_heads:
            full = geometry.attention(hidden, heads, kv_heads)
            least = geometry.attention(hidden, *minimum[index][:2])
            structures.append({"layer": index, "structure": "attention", "parameters": full,
                               "max_fraction": 1 - least / full, "curve": rise_curve(measured[index]["attention"])})
        if config.prune_mlp:
            structures.append({"layer": index, "structure": "mlp", "parameters": per_channel * width,
                               "max_fraction": 1 - 1 / width, "curve": rise_curve(measured[index]["mlp"])})
    full_widths = sum(geometry.attention(hidden, h, k) + geometry.mlp(hidden, w) for h, k, w in geometry.shapes)
    removed = allocate(structures, full_widths - width_budget)
    fractions = [{"attention": 0.0, "mlp": 0.0} for _ in geometry.shapes]
    for structure, fraction in zip(structures, removed):
        fractions[structure["layer"]][structure["structure"]] = round(fraction, 4)
        if structure["structure"] == "attention":
            cutter.cut_layer_to(structure["layer"], structure["parameters"] * (1 - fraction))
    allocation["removed_fractions"] = fractions
    widths = [width for *_, width in geometry.shapes]
    if not config.prune_mlp:
        return [list(range(width)) for width in widths]
    channels = round((width_budget - cutter.parameters() - sum(geometry.mlp(hidden, 0) for _ in widths))
                     / per_channel)
    counts = _distribute(channels, [w * (1 - f["mlp"]) for w, f in zip(widths, fractions)], widths)
    return [sorted(_mlp_scores(saliency, i, w).topk(n).indices.tolist())
            for i, (w, n) in enumerate(zip(widths, counts))]


def _distribute(total: int, desired: list[float], caps: list[int]) -> list[int]:
    """Whole counts in [1, cap] summing to `total` (clamped to what is possible), in proportion to `desired`."""
    total = min(max(total, len(caps)), sum(caps))

    def counts_at(scale: float) -> list[int]:
        return [min(cap, max(1, math.floor(scale * d))) for d, cap in zip(desired, caps)]

    low, high = 0.0, max(cap / max(d, 1e-9) for d, cap in zip(desired, caps)) + 1
    for _ in range(60):  # the largest scale whose counts do not exceed the total
        middle = (low + high) / 2
        low, high = (middle, high) if sum(counts_at(middle)) <= total else (low, middle)
    counts = counts_at(low)
    by_remainder = sorted(range(len(caps)), key=lambda i: math.floor(low * desired[i]) - low * desired[i])
    while sum(counts) < total:
        for i in by_remainder:
            if sum(counts) < total and counts[i] < caps[i]:
                counts[i] += 1
    return counts


def _mlp_scores(saliency: dict[str, torch.Tensor], layer: int, width: int) -> torch.Tensor:
    prefix = f"model.layers.{layer}.mlp"
    return (_row_blocks(saliency, f"{prefix}.gate_proj", width) + _row_blocks(saliency, f"{prefix}.up_proj", width)
            + _column_blocks(saliency, f"{prefix}.down_proj", width))


def _check_plan(model: LlamaForCausalLM, plan: PrunePlan) -> None:
    """Refuse a plan that would break grouped-query attention or point outside the model."""
    if len(plan.layers) != len(model.model.layers):
        raise PruneError(f"plan has {len(plan.layers)} layers, the model {len(model.model.layers)}")
    for index, (layer, kept) in enumerate(zip(model.model.layers, plan.layers)):
        attn = layer.self_attn
        heads, kv_heads = attn.q_proj.out_features // attn.head_dim, attn.k_proj.out_features // attn.head_dim
        per_group = heads // kv_heads
        owners = [h // per_group for h in kept.query_heads]
        counts = {g: owners.count(g) for g in kept.kv_heads}
        if (not kept.kv_heads or set(owners) != set(kept.kv_heads) or len(set(counts.values())) != 1
                or max(kept.query_heads, default=heads) >= heads or max(kept.kv_heads) >= kv_heads):
            raise PruneError(f"layer {index}: plan keeps query heads {kept.query_heads} over key/value heads "
                             f"{kept.kv_heads}; every kept group needs the same number of its own query heads")
        if not kept.mlp_channels or max(kept.mlp_channels) >= layer.mlp.gate_proj.out_features:
            raise PruneError(f"layer {index}: plan keeps MLP channels outside "
                             f"0..{layer.mlp.gate_proj.out_features - 1}")


def _cut_attention(attn: nn.Module, kept: LayerPlan) -> None:
    """Remove whole query heads and key/value groups with torch-pruning's functional pruners (see module doc)."""
    heads, kv_heads = attn.q_proj.out_features // attn.head_dim, attn.k_proj.out_features // attn.head_dim
    dropped_query = _channels(sorted(set(range(heads)) - set(kept.query_heads)), attn.head_dim)
    dropped_kv = _channels(sorted(set(range(kv_heads)) - set(kept.kv_heads)), attn.head_dim)
    if dropped_query:
        tp.prune_linear_out_channels(attn.q_proj, dropped_query)
        tp.prune_linear_in_channels(attn.o_proj, dropped_query)
    if dropped_kv:
        tp.prune_linear_out_channels(attn.k_proj, dropped_kv)
        tp.prune_linear_out_channels(attn.v_proj, dropped_kv)
    attn.num_key_value_groups = len(kept.query_heads) // len(kept.kv_heads)


def _dependency_graph(model: LlamaForCausalLM) -> tp.DependencyGraph:
    """torch-pruning's graph of the model, traced without a KV cache (the cache's concat confuses the tracer)."""
    norms = [(module.weight, 0) for module in model.modules() if isinstance(module, LlamaRMSNorm)]
    example = torch.zeros((1, 4), dtype=torch.long)
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model, example_inputs={"input_ids": example, "use_cache": False},
            output_transform=lambda output: output.logits, unwrapped_parameters=norms, verbose=False)


def _prune_group(model: nn.Module, graph: tp.DependencyGraph, root: nn.Module, pruning_fn, idxs: list[int],
                 expected: set[str]) -> None:
    """Prune `idxs` of the group torch-pruning couples to `root`, after checking it is exactly `expected`
    ('<module or parameter name>:out' / ':in')."""
    if not idxs:
        return
    group = graph.get_pruning_group(root, pruning_fn, idxs)
    names = {module: name for name, module in model.named_modules()}
    names.update({param: name for name, param in model.named_parameters(remove_duplicate=False)})
    prunable = (tp.ops.OPTYPE.LINEAR, tp.ops.OPTYPE.EMBED, tp.ops.OPTYPE.PARAMETER)
    found = {f"{names.get(dep.target.module, dep.target.name)}:{dep.handler.__name__.split('_')[1]}"
             for dep, _ in group if dep.target.type in prunable}
    if found != expected:
        raise PruneError(f"torch-pruning coupled {names[root]} to an unexpected set: missing "
                         f"{sorted(expected - found)}, extra {sorted(found - expected)}")
    group.prune()


def _hidden_group(model: LlamaForCausalLM) -> set[str]:
    """Every weight that has one entry per hidden channel, as _prune_group names it."""
    expected = {"model.embed_tokens:out", "model.norm.weight:out", "lm_head:in"}
    for index in range(len(model.model.layers)):
        prefix = f"model.layers.{index}"
        expected |= {f"{prefix}.self_attn.{p}_proj:in" for p in "qkv"} | {f"{prefix}.self_attn.o_proj:out"}
        expected |= {f"{prefix}.mlp.gate_proj:in", f"{prefix}.mlp.up_proj:in", f"{prefix}.mlp.down_proj:out"}
        expected |= {f"{prefix}.input_layernorm.weight:out", f"{prefix}.post_attention_layernorm.weight:out"}
    return expected


def apply_plan(model: LlamaForCausalLM, plan: PrunePlan) -> None:
    """Cut the model in place to `plan`, update its config (hidden_size, uniform layer shapes) and check shapes."""
    _check_plan(model, plan)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    for param in model.parameters():
        param.requires_grad_(True)  # the graph is traced through autograd
    for layer, kept in zip(model.model.layers, plan.layers):
        _cut_attention(layer.self_attn, kept)
    graph = _dependency_graph(model)
    for index, (layer, kept) in enumerate(tqdm(list(zip(model.model.layers, plan.layers)), desc="prune mlp",
                                               leave=False)):
        prefix = f"model.layers.{index}.mlp"
        dropped = sorted(set(range(layer.mlp.gate_proj.out_features)) - set(kept.mlp_channels))
        _prune_group(model, graph, layer.mlp.gate_proj, tp.prune_linear_out_channels, dropped,
                     {f"{prefix}.gate_proj:out", f"{prefix}.up_proj:out", f"{prefix}.down_proj:in"})
    embedding = model.model.embed_tokens
    dropped = sorted(set(range(embedding.embedding_dim)) - set(plan.hidden_channels))
    _prune_group(model, graph, embedding, tp.prune_embedding_out_channels, dropped, _hidden_group(model))
    if tied and model.lm_head.weight is not model.model.embed_tokens.weight:
        # both were cut from the one shared tensor at the same columns; share it again
        if not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight):
            raise PruneError("tied embedding and lm_head differ after pruning the hidden width")
        model.lm_head.weight = model.model.embed_tokens.weight
    _update_config(model)
    check_shapes(model)


def _update_config(model: LlamaForCausalLM) -> None:
    """Make config.json describe the cut model. The base head counts and MLP width stay as they were (LlamaConfig
    insists hidden_size is a multiple of num_attention_heads); `sqlcopilot_layers` holds the real per-layer shapes."""
    model.config.hidden_size = model.model.embed_tokens.embedding_dim
    model.config.head_dim = model.model.layers[0].self_attn.head_dim
    model.config.sqlcopilot_layers = layer_shapes(model)


def check_shapes(model: LlamaForCausalLM) -> None:
    """Raise PruneError naming every inconsistent weight: whole heads, GQA grouping, hidden and MLP widths, tying."""
    hidden = model.model.embed_tokens.embedding_dim
    problems = []
    if model.config.hidden_size != hidden:
        problems.append(f"config.hidden_size {model.config.hidden_size} != embedding width {hidden}")
    for index, layer in enumerate(model.model.layers):
        attn, mlp, where = layer.self_attn, layer.mlp, f"layer {index}"
        d = attn.head_dim
        if d != getattr(model.config, "head_dim", d):
            problems.append(f"{where}: head_dim {d} != config.head_dim {model.config.head_dim}")
        if attn.q_proj.out_features % d or attn.k_proj.out_features % d or attn.k_proj.out_features == 0:
            problems.append(f"{where}: q/k widths {attn.q_proj.out_features}/{attn.k_proj.out_features} are not "
                            f"whole heads of {d}")
            continue
        heads, kv_heads = attn.q_proj.out_features // d, attn.k_proj.out_features // d
        if heads % kv_heads or attn.num_key_value_groups != heads // kv_heads:
            problems.append(f"{where}: {heads} query heads, {kv_heads} key/value heads, "
                            f"num_key_value_groups {attn.num_key_value_groups}")
        if attn.v_proj.out_features != attn.k_proj.out_features or attn.o_proj.in_features != attn.q_proj.out_features:
            problems.append(f"{where}: v_proj out {attn.v_proj.out_features} / o_proj in {attn.o_proj.in_features}")
        if not mlp.gate_proj.out_features == mlp.up_proj.out_features == mlp.down_proj.in_features:
            problems.append(f"{where}: gate/up/down widths {mlp.gate_proj.out_features}/{mlp.up_proj.out_features}/"
                            f"{mlp.down_proj.in_features}")
        for name, linear in (("q_proj", attn.q_proj), ("k_proj", attn.k_proj), ("v_proj", attn.v_proj),
                             ("gate_proj", mlp.gate_proj), ("up_proj", mlp.up_proj)):
            if linear.in_features != hidden:
                problems.append(f"{where}: {name} reads {linear.in_features} channels, hidden is {hidden}")
        for name, linear in (("o_proj", attn.o_proj), ("down_proj", mlp.down_proj)):
            if linear.out_features != hidden:
                problems.append(f"{where}: {name} writes {linear.out_features} channels, hidden is {hidden}")
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if norm.weight.shape != (hidden,):
                problems.append(f"{where}: RMSNorm weight {tuple(norm.weight.shape)}, hidden is {hidden}")
    for name, linear in model.named_modules():
        if isinstance(linear, nn.Linear) and linear.weight.shape != (linear.out_features, linear.in_features):
            problems.append(f"{name}: weight {tuple(linear.weight.shape)} disagrees with its in/out features")
    if model.model.norm.weight.shape != (hidden,) or model.lm_head.in_features != hidden:
        problems.append(f"final norm / lm_head do not read {hidden} channels")
    if model.config.tie_word_embeddings and model.lm_head.weight is not model.model.embed_tokens.weight:
        problems.append("config ties the embedding and lm_head but they are separate tensors")
    if problems:
        raise PruneError("pruned model is inconsistent: " + "; ".join(problems[:12]))


def prune_model(model: LlamaForCausalLM, config: PruneConfig, calibration: Calibration | None = None,
                sensitivity_batches: Sequence | None = None, sensitivity: dict | None = None,
                saliency: dict[str, torch.Tensor] | None = None) -> dict:
    """Prune `model` in place to ~ratio of its parameters; returns a report (counts, ratio, shapes, seconds, and
    with allocation 'sensitivity' the measured sensitivity and each layer's removed fractions). `sensitivity`,
    `saliency`: earlier measurements of this model to reuse (plan_pruning)."""
    started = time.perf_counter()
    original, original_hidden = count_parameters(model), model.model.embed_tokens.embedding_dim
    plan = plan_pruning(model, config, calibration, sensitivity_batches, sensitivity, saliency)
    surgery_started = time.perf_counter()
    apply_plan(model, plan)
    kept = count_parameters(model)
    if kept != plan.planned_parameters:
        raise PruneError(f"pruned model has {kept} parameters, the plan promised {plan.planned_parameters}")
    with torch.no_grad():
        model.eval()(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=False)
    return {"ratio": config.ratio, "criterion": config.criterion, "allocation": config.allocation,
            **plan.allocation, "original_parameters": original,
            "target_parameters": plan.target_parameters, "kept_parameters": kept,
            "achieved_ratio": kept / original, "original_hidden_size": original_hidden,
            "hidden_size": model.config.hidden_size, "layers": layer_shapes(model),
            "seconds": {**plan.seconds, "surgery": time.perf_counter() - surgery_started,
                        "total": time.perf_counter() - started}}


COMPARE_VARIANTS = ("global", "uniform", "sensitivity")
DEFAULT_COMPARE = ("global", "sensitivity")


def compare_allocations(model: LlamaForCausalLM, tokenizer, train_examples: list, prompt, config: PruneConfig,
                        holdout: int, ex_eval=None, variants: tuple[str, ...] = DEFAULT_COMPARE) -> dict:
    """Prune copies of `model` to config.ratio with today's global ranking (allocation 'saliency', global_ranking),
    with every layer cut alike ('uniform': saliency, no global ranking) and with the sensitivity allocation, all with
    config's criterion (`variants`: which of them), and report each one's loss on `holdout` train examples that no
    calibration saw (and, given an EvalConfig `ex_eval`, its execution accuracy); before any distillation.
    `holdout_used`/`calibration_used`: examples that fit sensitivity_max_seq_len."""
    import copy
    import tempfile

    from sqlcopilot_core.sensitivity import calibration_loss, packed_batches

    unknown = [name for name in variants if name not in COMPARE_VARIANTS]
    if unknown or not variants:
        raise PruneError(f"compare: variants {list(variants)} must be some of {list(COMPARE_VARIANTS)}")
    shuffled = random.Random(config.seed).sample(list(train_examples), len(train_examples))
    if holdout < 1 or holdout >= len(shuffled):
        raise PruneError(f"compare: --holdout {holdout} must be between 1 and {len(shuffled) - 1} (train examples)")
    held, pool = shuffled[:holdout], shuffled[holdout:]
    held_batches = packed_batches(held, tokenizer, prompt, holdout, config.seed, config.calibration_batch_size,
                                  config.sensitivity_max_seq_len, what="held-out")
    calibration_batches = (packed_batches(pool, tokenizer, prompt, config.sensitivity_examples, config.seed,
                                          config.calibration_batch_size, config.sensitivity_max_seq_len,
                                          per_database=config.sensitivity_per_database)
                           if "sensitivity" in variants else [])
    calibration = None
    if config.criterion == "taylor":
        calibration = make_calibration_batches(example_sequences(pool[:config.calibration_batches
                                                                     * config.calibration_batch_size],
                                                                 tokenizer, prompt), config, tokenizer.pad_token_id)
    result = {"ratio": config.ratio, "criterion": config.criterion, "holdout": len(held),
              "holdout_used": sum(len(batch.examples) for batch in held_batches),
              "calibration_used": sum(len(batch.examples) for batch in calibration_batches),
              "taylor_examples": (config.calibration_batches * config.calibration_batch_size
                                  if config.criterion == "taylor" else 0),
              "unpruned": {"holdout_loss": calibration_loss(model, held_batches)}}
    configs = {"global": replace(config, allocation="saliency", global_ranking=True),
               "uniform": replace(config, allocation="saliency", global_ranking=False),
               "sensitivity": replace(config, allocation="sensitivity")}
    # every variant prunes a copy of the same model with the same criterion and calibration: one saliency serves all
    saliency = weight_saliency(model, config, calibration)
    measured = None
    for name in variants:
        variant = configs[name]
        pruned = copy.deepcopy(model)
        report = prune_model(pruned, variant, calibration, calibration_batches, sensitivity=measured,
                             saliency=saliency)
        measured = report.get("sensitivity", measured)
        row = {"holdout_loss": calibration_loss(pruned, held_batches), "achieved_ratio": report["achieved_ratio"],
               "layers": report["layers"], "hidden_size": report["hidden_size"]}
        if "removed_fractions" in report:
            row.update(removed_fractions=report["removed_fractions"], sensitivity=report["sensitivity"])
        if ex_eval is not None:
            row["ex"] = _ex(pruned, tokenizer, prompt, ex_eval, tempfile)
        result[name] = row
    if "global" in result and "sensitivity" in result:
        result["holdout_loss_change"] = result["sensitivity"]["holdout_loss"] - result["global"]["holdout_loss"]
    return result


def _ex(model, tokenizer, prompt, evaluation, tempfile) -> float:
    """Execution accuracy of `model` under the EvalConfig `evaluation` (the scorer every stage uses)."""
    from sqlcopilot_core.modeling import save_model
    from sqlcopilot_core.prompting import write_prompt_settings
    from sqlcopilot_core.stages.evaluate import score

    with tempfile.TemporaryDirectory(prefix="prune-compare-") as folder:
        save_model(model, tokenizer, Path(folder) / "model")
        write_prompt_settings(Path(folder) / "model", prompt)
        return score(Path(folder) / "model", Path(folder) / "score", evaluation)["ex"]


def example_sequences(examples: list, tokenizer, prompt) -> list[list[int]]:
    """Prompt + gold SQL token ids of Spider examples, the last CALIBRATION_TOKENS of each."""
    from sqlcopilot_core.packing import target_ids
    from sqlcopilot_core.prompting import Prompter

    prompter = Prompter(prompt, tokenizer)
    return [(prompter.ids(e.db_path, e.question) + target_ids(tokenizer, e.query))[-CALIBRATION_TOKENS:]
            for e in examples]


def compare_main(argv: list[str]) -> None:
    """`compare`: global ranking vs sensitivity allocation at one ratio, held-out loss (and ex), as JSON."""
    import json

    from sqlcopilot_core.config import config_from_dict, parse_key_values
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.prompting import model_prompt_settings
    from sqlcopilot_core.scoring import EvalConfig
    from sqlcopilot_core.spider import load_split

    parser = argparse.ArgumentParser(prog="python -m sqlcopilot_core.prune compare",
                                     description=compare_allocations.__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="fine-tuned model folder (e.g. a finetune artifact)")
    parser.add_argument("--spider-dir", required=True, help="Spider-format folder (train_spider.json, database/)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--holdout", type=int, default=200, help="train examples held out for the loss")
    parser.add_argument("--ex", type=int, default=0, metavar="N", help="also score ex on the first N dev examples")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="PruneConfig settings (default criterion=taylor), e.g. sensitivity_examples=256")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_COMPARE), choices=COMPARE_VARIANTS,
                        help="which allocations to compare (uniform: every layer cut alike)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    config = config_from_dict(PruneConfig, {"criterion": "taylor", **parse_key_values(args.set),
                                            "ratio": args.ratio}, "prune")
    model, tokenizer = load_model(args.model)
    evaluation = EvalConfig(spider_dir=args.spider_dir, limit=args.ex) if args.ex else None
    result = compare_allocations(model, tokenizer, load_split(args.spider_dir, "train"),
                                 model_prompt_settings(args.model), config, args.holdout, evaluation,
                                 tuple(args.variants))
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    """Prune a model folder (or the tiny test model), print the report, try a generation, optionally save;
    `compare ...` runs compare_main."""
    import json
    import sys

    from sqlcopilot_core.modeling import load_model, save_model, tiny_model_and_tokenizer

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the random tiny model)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--criterion", choices=CRITERIA, default="magnitude")
    parser.add_argument("--prune-hidden", action="store_true")
    parser.add_argument("--calibration-file", help="text file, one calibration example per line (taylor)")
    parser.add_argument("--out", help="save the pruned model here")
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model) if args.model else tiny_model_and_tokenizer()
    config = PruneConfig(ratio=args.ratio, criterion=args.criterion, prune_hidden=args.prune_hidden)
    calibration = None
    if args.calibration_file:
        with open(args.calibration_file, encoding="utf-8") as lines:
            sequences = [tokenizer(line.strip())["input_ids"] for line in lines if line.strip()]
        calibration = make_calibration_batches(sequences, config, tokenizer.pad_token_id)
    report = prune_model(model, config, calibration)
    print(json.dumps(report, indent=1))
    prompt = tokenizer("SELECT count(*) FROM", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    print("generation:", repr(tokenizer.decode(output[0])))
    if args.out:
        print("saved to", save_model(model, tokenizer, args.out))


if __name__ == "__main__":
    main()
