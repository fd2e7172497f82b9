"""How much a Llama's calibration loss rises when it loses part of one structure of one layer: a fraction of a
layer's key/value groups (each with its query heads), a fraction of its MLP channels, or a fraction of the model's
hidden width. The loss is the cross-entropy on gold SQL over packed Spider train batches (packing.py), exactly what
the model was trained on; a structure is "lost" by zeroing the weights that carry its output (a masked model
computes what the pruned model would, up to RMSNorm's mean over the zeroed hidden channels), least salient first,
then restored. prune.py turns the figures into per-layer widths (PruneConfig.allocation = 'sensitivity').

    python -m sqlcopilot_core.prune compare --model M --spider-dir D --ratio 0.5 --holdout 200
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from sqlcopilot_core.packing import PackedBatch, PackedData, collate_packs, per_branch_loss

STRUCTURES = ("attention", "mlp")


def packed_batches(examples: list, tokenizer, prompt, count: int, seed: int, packs_per_batch: int,
                   max_seq_len: int = 1024, what: str = "calibration",
                   per_database: int | None = None) -> list[PackedBatch]:
    """`count` examples chosen by `seed`, packed by shared schema into batches of `packs_per_batch` packs. With
    `per_database`, databases are drawn at random and up to that many of each one's examples taken, so that
    several questions share each pack's schema prefix and a pass reads fewer tokens per example."""
    from sqlcopilot_core.prompting import Prompter

    if count < 1 or not examples:
        raise ValueError(f"{what}: need at least one example (asked for {count} of {len(examples)})")
    shuffled = random.Random(seed).sample(list(examples), len(examples))
    if per_database:
        by_database: dict[str, list] = {}
        for example in shuffled:  # databases in order of first appearance: a random order
            by_database.setdefault(example.db_id, []).append(example)
        chosen = [e for group in by_database.values() for e in group[:per_database]][:count]
    else:
        chosen = shuffled[:count]
    data = PackedData(chosen, tokenizer, Prompter(prompt, tokenizer), max_seq_len, seed, progress=False, what=what)
    packs = data.epoch_packs(0)
    return [collate_packs(packs[i:i + packs_per_batch], tokenizer.pad_token_id)
            for i in range(0, len(packs), packs_per_batch)]


@torch.no_grad()
def calibration_loss(model, batches: Sequence[PackedBatch]) -> float:
    """Mean over every example of its mean cross-entropy on its gold SQL tokens."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        losses = per_branch_loss(model, batch)
        total, count = total + float(losses.sum()), count + losses.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError("calibration_loss: the batches hold no example")
    return total / count


@contextmanager
def zeroed(slices: list[tuple[torch.Tensor, int, list[int]]]) -> Iterator[None]:
    """Within the block, the given (parameter, dimension, indices) slices are zero; their values come back after."""
    saved = []
    with torch.no_grad():
        for param, dim, index in slices:
            if index:
                rows = torch.tensor(index, device=param.device)
                saved.append((param, dim, rows, param.index_select(dim, rows).clone()))
                param.index_fill_(dim, rows, 0.0)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, dim, rows, values in saved:
                param.index_copy_(dim, rows, values)


def attention_slices(model, layer: int, groups: Sequence[int], heads: Sequence[int] = ()) -> list:
    """Zeroing o_proj's input columns of whole key/value groups (all their query heads), or of single query heads:
    their attention output is gone."""
    attn = model.model.layers[layer].self_attn
    d = attn.head_dim
    per_group = attn.q_proj.out_features // attn.k_proj.out_features
    lost = sorted({g * per_group + j for g in groups for j in range(per_group)} | set(heads))
    return [(attn.o_proj.weight, 1, [h * d + c for h in lost for c in range(d)])]


def mlp_slices(model, layer: int, channels: Sequence[int]) -> list:
    """Zeroing down_proj's input columns: the channels' output is gone."""
    return [(model.model.layers[layer].mlp.down_proj.weight, 1, list(channels))]


def hidden_slices(model, channels: Sequence[int]) -> list:
    """Zeroing the residual stream's channels: embedding columns (and lm_head's, tied or not), every RMSNorm weight
    and every o_proj / down_proj output row there, so nothing writes or reads them."""
    channels = list(channels)
    slices = [(model.model.embed_tokens.weight, 1, channels), (model.model.norm.weight, 0, channels)]
    if model.lm_head.weight is not model.model.embed_tokens.weight:
        slices.append((model.lm_head.weight, 1, channels))
    for layer in model.model.layers:
        slices += [(layer.input_layernorm.weight, 0, channels), (layer.post_attention_layernorm.weight, 0, channels),
                   (layer.self_attn.o_proj.weight, 0, channels), (layer.mlp.down_proj.weight, 0, channels)]
    return slices


def removal_counts(fractions: Sequence[float], units: int, keep_one: bool = True) -> list[int]:
    """How many of `units` each fraction removes (rounded, at least 1, leaving one when keep_one), without repeats."""
    top = units - 1 if keep_one else units
    return sorted({min(max(1, round(f * units)), top) for f in fractions} - {0}) if top >= 1 else []


class LayerInputs:
    """Within `with`: {layer index: (args, kwargs)} each decoder layer was called with during a forward pass."""

    def __init__(self, model):
        self.model, self.handles, self.inputs = model, [], {}

    def __enter__(self) -> dict[int, tuple]:
        for index, layer in enumerate(self.model.model.layers):
            self.handles.append(layer.register_forward_pre_hook(self._recorder(index), with_kwargs=True))
        return self.inputs

    def _recorder(self, index: int):
        def record(module, args, kwargs):
            self.inputs[index] = (args, kwargs)
        return record

    def __exit__(self, *exc_info) -> None:
        for handle in self.handles:
            handle.remove()


def branch_losses_from(model, batch: PackedBatch, inputs: dict[int, tuple], start: int) -> torch.Tensor:
    """Per-example gold-SQL cross-entropy of `batch`, running only decoder layers start.. on the inputs an intact
    pass gave layer `start` (what lies below a masked layer is unchanged by the mask)."""
    import torch.nn.functional as F

    from sqlcopilot_core.packing import per_branch_mean

    rows, cols = batch.loss_positions.unbind(1)
    args, _ = inputs[start]
    hidden = args[0]
    for index in range(start, len(model.model.layers)):
        layer_args, kwargs = inputs[index]
        output = model.model.layers[index](hidden, *layer_args[1:], **kwargs)
        hidden = output[0] if isinstance(output, tuple) else output
    logits = model.lm_head(model.model.norm(hidden[rows, cols]))
    losses = F.cross_entropy(logits.float(), batch.next_ids[rows, cols], reduction="none")
    branches_before = torch.tensor([0] + [len(p.branches) for p in batch.packs[:-1]], device=rows.device).cumsum(0)
    branch = branches_before[rows] + batch.branch_index[rows, cols] - 1
    return per_branch_mean(losses, branch, len(batch.examples))


def measure_sensitivity(model, batches: Sequence[PackedBatch], orders: dict[str, Any],
                        fractions: Sequence[float], measure_hidden: bool = True) -> dict[str, Any]:
    """Loss rise (masked loss - intact loss) per layer and structure at each removal fraction.

    `orders` gives, least salient first, each layer's key/value groups ('attention') and query heads within them
    ('attention_heads', used when a layer has a single group), MLP channels ('mlp') and the hidden channels
    ('hidden'). Returns {"base_loss", "fractions", "layers": [{"attention": {fraction: rise}, "mlp": {...}}, ...],
    "hidden": {fraction: rise}, "passes"}; the fraction keys are the fractions actually removed (n / units).
    Per batch, one intact pass records every layer's inputs; a layer's masks then rerun only that layer and those
    above it (about half the compute of whole passes); the hidden-width masks need whole passes."""
    plan = []
    for layer in range(len(model.model.layers)):
        groups = orders["attention"][layer]
        if len(groups) > 1:
            plan += [(layer, "attention", n / len(groups), attention_slices(model, layer, groups[:n]))
                     for n in removal_counts(fractions, len(groups))]
        else:
            heads = orders["attention_heads"][layer]
            plan += [(layer, "attention", n / len(heads), attention_slices(model, layer, (), heads[:n]))
                     for n in removal_counts(fractions, len(heads))]
        channels = orders["mlp"][layer]
        plan += [(layer, "mlp", n / len(channels), mlp_slices(model, layer, channels[:n]))
                 for n in removal_counts(fractions, len(channels))]
    if measure_hidden:
        hidden = orders["hidden"]
        plan += [(None, "hidden", n / len(hidden), hidden_slices(model, hidden[:n]))
                 for n in removal_counts(fractions, len(hidden))]
    was_training = model.training
    model.eval()
    base, sums, count = 0.0, [0.0] * len(plan), 0
    with torch.no_grad(), tqdm(total=len(batches) * (len(plan) + 1), desc="sensitivity", unit="pass") as bar:
        for batch in batches:
            with LayerInputs(model) as inputs:
                intact = per_branch_loss(model, batch)
            base, count = base + float(intact.sum()), count + intact.numel()
            bar.update()
            for i, (layer, _, _, slices) in enumerate(plan):
                with zeroed(slices):
                    losses = (per_branch_loss(model, batch) if layer is None else
                              branch_losses_from(model, batch, inputs, layer))
                sums[i] += float(losses.sum())
                bar.update()
            del inputs
    model.train(was_training)
    if count == 0:
        raise ValueError("measure_sensitivity: the batches hold no example")
    result = {"base_loss": base / count, "fractions": list(fractions), "passes": len(plan) + 1, "hidden": {},
              "layers": [{structure: {} for structure in STRUCTURES} for _ in model.model.layers]}
    for (layer, structure, fraction, _), total in zip(plan, sums):
        rise = total / count - base / count
        if not math.isfinite(rise):
            where = "hidden width" if layer is None else f"layer {layer} {structure}"
            raise ValueError(f"sensitivity: loss is not finite with {fraction:.2f} of the {where} removed")
        target = result["hidden"] if layer is None else result["layers"][layer][structure]
        target[round(fraction, 6)] = rise
    return result


def rise_curve(points: dict[float, float]) -> list[tuple[float, float]]:
    """The measured (fraction removed, rise) points as a curve from (0, 0) to fraction 1: never decreasing, never
    below 0, extended past the last point along the line from the origin."""
    curve, highest = [(0.0, 0.0)], 0.0
    for fraction, rise in sorted(points.items()):
        highest = max(highest, rise, 0.0)
        curve.append((fraction, highest))
    if curve[-1][0] < 1.0:
        last_fraction, last_rise = curve[-1]
        curve.append((1.0, last_rise / last_fraction if last_fraction > 0 else 0.0))
    return curve


def rise_at(curve: list[tuple[float, float]], fraction: float) -> float:
    """The curve's rise at `fraction` (linear between points)."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if fraction <= x1:
            return y0 + (y1 - y0) * (fraction - x0) / (x1 - x0) if x1 > x0 else y1
    return curve[-1][1]


def allocate(structures: list[dict[str, Any]], remove: float, steps: int = 64) -> list[float]:
    """Fraction of each structure removed so that the parameters removed reach `remove` at the least predicted loss
    rise: greedy over equal slices (1/steps of a structure), cheapest rise per parameter first, ties going to the
    structure cut least so far. A structure is {"parameters": full count, "max_fraction": most it may lose,
    "curve": rise_curve}. Returns one removed fraction per structure."""
    import heapq

    removed = [0.0] * len(structures)
    heap = []

    def push(i: int) -> None:
        s, now = structures[i], removed[i]
        step = min(1.0 / steps, s["max_fraction"] - now)
        if step <= 1e-12 or s["parameters"] <= 0:
            return
        cost = rise_at(s["curve"], now + step) - rise_at(s["curve"], now)
        heapq.heappush(heap, (cost / (step * s["parameters"]), now, i, step))

    for i in range(len(structures)):
        push(i)
    total = 0.0
    while total < remove and heap:
        _, _, i, step = heapq.heappop(heap)
        removed[i] += step
        total += step * structures[i]["parameters"]
        push(i)
    return removed


def summary_by_layer(report: dict[str, Any]) -> list[dict[str, float]]:
    """Per layer of a prune report made with allocation 'sensitivity': the mean loss rise of its attention and MLP
    over the measured fractions and the fraction of each removed ([] for other reports)."""
    if "sensitivity" not in report:
        return []
    rows = []
    for measured, removed in zip(report["sensitivity"]["layers"], report["removed_fractions"]):
        row = {f"sensitivity_{s}": sum(measured[s].values()) / len(measured[s]) for s in STRUCTURES if measured[s]}
        rows.append({**row, **{f"removed_{s}": removed[s] for s in STRUCTURES}})
    return rows
