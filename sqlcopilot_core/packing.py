"""Shared-schema packing: the training data path of finetune and distill.

    python -m sqlcopilot_core.packing work/smollm2_base ../shared/spider     # tokens per epoch, packed vs one by one

A Spider database has ~50 training questions, and its schema is ~4x longer than a question and its SQL. Read one
example at a time, an epoch re-reads every schema ~50 times. A pack reads it once:

    [schema prefix][hints + question 1 + SQL 1][hints + question 2 + SQL 2] ...

Each branch attends to the schema prefix and to itself only, and its position ids continue from the prefix's end, so
every branch sees exactly the tokens and positions it would see alone: its loss is the loss of that example computed
on its own (tests/core/test_packing.py checks this to 1e-4). The batch carries that structure twice: as a 4-D
boolean mask (what any attention implementation understands) and as a per-row layout that `packed_forward` hands
to `branch_attention`, which computes only the blocks the mask allows: the prefix causally, then every branch
against [prefix, itself] in one batched product. Attention then costs branches x (prefix + branch) instead of the
pack's length squared; on a 1,024-token pack of ~13 branches that is 2-3x less attention time (forward + backward)
than sdpa's CPU kernel, which computes every block of the mask.
The loss is taken on SQL tokens only, and logits are computed only at the positions that predict them (the output
layer over the 49k-word vocabulary is a fifth of the model's compute).

Examples pack together when their schema text is identical: a database whose schema fits the budget always does;
one filtered per question packs only questions that selected the same tables. Packs are rebuilt every epoch from a
shuffled order (seed, epoch), so branches meet different neighbours, and the packs of an epoch are shuffled too.
"""

from __future__ import annotations

import random
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sqlcopilot_core.prompting import Prompter
from sqlcopilot_core.spider import Example

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One example as token ids: the schema prefix it shares with its pack, its branch prompt, its target."""

    example: Example
    prefix_ids: tuple[int, ...]
    branch_ids: tuple[int, ...]
    """Value hints, question and answer cue."""
    target_ids: tuple[int, ...]
    """The gold SQL (whitespace collapsed) then end-of-text."""

    @property
    def prompt_ids(self) -> list[int]:
        """The whole prompt as it is given to the model at prediction time."""
        return list(self.prefix_ids) + list(self.branch_ids)

    @property
    def branch_length(self) -> int:
        return len(self.branch_ids) + len(self.target_ids)


@dataclass(frozen=True)
class Pack:
    """One training sequence: a schema prefix and the examples that share it."""

    prefix_ids: tuple[int, ...]
    branches: tuple[Encoded, ...]

    def __len__(self) -> int:
        return len(self.prefix_ids) + sum(b.branch_length for b in self.branches)


@dataclass
class RowLayout:
    """Where one row's prefix and branches sit: what `branch_attention` needs instead of the 4-D mask."""

    prefix: int
    """Length of the schema prefix (columns [0, prefix))."""
    index: torch.Tensor
    """(branches, longest branch) long: the column of each branch token, padded with 0."""
    own: torch.Tensor
    """(branches, longest branch, longest branch) bool: query i of a branch may attend to its key j (causal, real)."""
    valid: torch.Tensor
    """(branches, longest branch) bool: which entries of `index` are real tokens."""

    def to(self, device: torch.device) -> RowLayout:
        return RowLayout(self.prefix, self.index.to(device), self.own.to(device), self.valid.to(device))


def row_layout(prefix: int, branch_lengths: list[int]) -> RowLayout:
    longest = max(branch_lengths, default=1)
    index = torch.zeros((len(branch_lengths), longest), dtype=torch.long)
    valid = torch.zeros((len(branch_lengths), longest), dtype=torch.bool)
    start = prefix
    for k, length in enumerate(branch_lengths):
        index[k, :length] = torch.arange(start, start + length)
        valid[k, :length] = True
        start += length
    causal = torch.ones(longest, longest, dtype=torch.bool).tril()
    # a padding query still sees key 0 of its branch, so no softmax row is empty
    own = causal[None] & (valid[:, None, :] | (torch.arange(longest) == 0))
    return RowLayout(prefix, index, own, valid)


@dataclass
class PackedBatch:
    """Right-padded packs. `mask[b, 0, i, j]` is True where token i may attend to token j."""

    input_ids: torch.Tensor
    mask: torch.Tensor
    position_ids: torch.Tensor
    next_ids: torch.Tensor
    """(B, L): the token position t predicts where it is a SQL target, else -100: the loss's labels."""
    branch_index: torch.Tensor
    """(B, L): -1 on padding, 0 on the schema prefix, k on the k-th branch (1-based) of its row."""
    packs: list[Pack] = field(repr=False)
    layout: list[RowLayout] = field(repr=False, default_factory=list)
    """One RowLayout a row (the mask's structure, for branch_attention)."""

    @property
    def examples(self) -> list[Encoded]:
        """The branches in row-major order: the order of per_branch values."""
        return [branch for pack in self.packs for branch in pack.branches]

    @property
    def real_tokens(self) -> torch.Tensor:
        return self.branch_index >= 0

    @property
    def loss_positions(self) -> torch.Tensor:
        """(N, 2) row, column of every position whose logits a loss needs."""
        return (self.next_ids != IGNORE).nonzero()

    def n_tokens(self) -> int:
        return int(self.real_tokens.sum())

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.mask, "position_ids": self.position_ids}

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.mask.to(device), self.position_ids.to(device),
                           self.next_ids.to(device), self.branch_index.to(device), self.packs,
                           [row.to(device) for row in self.layout])


def target_ids(tokenizer, sql: str) -> list[int]:
    """The gold SQL as the model should write it (whitespace collapsed, as extract_sql returns it) + end-of-text."""
    return tokenizer(" ".join(sql.split()), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def collate_packs(packs: list[Pack], pad_id: int) -> PackedBatch:
    """Token ids, the branch-aware causal mask, continued positions and next-token labels of packs, right-padded."""
    width = max(len(p) for p in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(packs), width), dtype=torch.long)
    next_ids = torch.full((len(packs), width), IGNORE, dtype=torch.long)
    branch = torch.full((len(packs), width), -1, dtype=torch.long)
    for row, pack in enumerate(packs):
        prefix = len(pack.prefix_ids)
        ids[row, :prefix] = torch.tensor(pack.prefix_ids)
        positions[row, :prefix] = torch.arange(prefix)
        branch[row, :prefix] = 0
        start = prefix
        for k, item in enumerate(pack.branches, 1):
            tokens = list(item.branch_ids) + list(item.target_ids)
            end = start + len(tokens)
            ids[row, start:end] = torch.tensor(tokens)
            positions[row, start:end] = torch.arange(prefix, prefix + len(tokens))
            branch[row, start:end] = k
            # the token before each target token predicts it
            first_target = start + len(item.branch_ids)
            next_ids[row, first_target - 1:end - 1] = torch.tensor(item.target_ids)
            start = end
    query, key = branch[:, :, None], branch[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same_branch_or_prefix = (key == 0) | (key == query)
    mask = causal & same_branch_or_prefix & (key >= 0) & (query >= 0)
    # a padding row attends to itself only, so no softmax row is empty (an empty row would give NaN)
    mask |= torch.eye(width, dtype=torch.bool)
    layout = [row_layout(len(p.prefix_ids), [b.branch_length for b in p.branches]) for p in packs]
    return PackedBatch(ids, mask[:, None], positions, next_ids, branch, packs, layout)


BRANCH_ATTENTION = "sqlcopilot_branch"


def branch_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, *,
                     dropout: float = 0.0, scaling: float | None = None, pack_layout: list[RowLayout] | None = None,
                     **kwargs):
    """A transformers attention function: with `pack_layout`, attention over packs computed block by block (the
    prefix causally, each branch against [prefix, itself]); without it, transformers' sdpa attention, unchanged.

    query (B, heads, L, d), key/value (B, kv heads, L, d) -> (B, L, heads, d), as every transformers attention
    function returns. Padding columns come out as zeros (no loss reads them).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if pack_layout is None or dropout > 0 or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, width, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    # under autocast the products below come out in the autocast dtype, whatever query's is
    dtype = torch.get_autocast_dtype(query.device.type) if torch.is_autocast_enabled(query.device.type) else None
    out = query.new_zeros(batch, width, heads, dim, dtype=dtype or query.dtype)
    for row, layout in enumerate(pack_layout):
        q, k, v, prefix = query[row], key[row], value[row], layout.prefix
        if prefix:
            head = F.scaled_dot_product_attention(q[:, :prefix], k[:, :prefix], v[:, :prefix], is_causal=True,
                                                  scale=scale, enable_gqa=group > 1)
            out[row, :prefix] = head.transpose(0, 1).to(out.dtype)
        if not layout.index.numel():
            continue
        branches, longest = layout.index.shape
        qb = q[:, layout.index].view(kv_heads, group, branches, longest, dim)
        kb, vb = k[:, layout.index], v[:, layout.index]                      # (kv heads, branches, longest, d)
        to_prefix = torch.einsum("kgnid,kpd->kgnip", qb, k[:, :prefix]) * scale
        to_self = torch.einsum("kgnid,knjd->kgnij", qb, kb) * scale
        to_self = to_self.masked_fill(~layout.own, float("-inf"))
        weights = torch.cat([to_prefix, to_self], -1).float().softmax(-1).to(v.dtype)
        mixed = (torch.einsum("kgnip,kpd->kgnid", weights[..., :prefix], v[:, :prefix])
                 + torch.einsum("kgnij,knjd->kgnid", weights[..., prefix:], vb))
        mixed = mixed.reshape(heads, branches * longest, dim)
        keep = layout.valid.reshape(-1)
        out[row, layout.index.reshape(-1)[keep]] = mixed[:, keep].transpose(0, 1).to(out.dtype)
    return out, None


def _register_branch_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(BRANCH_ATTENTION, branch_attention)
    # the packs' 4-D mask is passed as is; this entry only matters to a call without one
    AttentionMaskInterface.register(BRANCH_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextmanager
def attention_by_branches(model):
    """Within `with`: every config of `model` (unwrapped or not) uses branch_attention; restored on exit, so a
    model saved or scored afterwards keeps its own attention implementation."""
    _register_branch_attention()
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation")}
    before = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for key, config in configs.items():
            if before[key] == "sdpa":
                config._attn_implementation = BRANCH_ATTENTION
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = before[key]


class LayerOutputs:
    """Within `with`: a dict filled, during a forward pass, with the output hidden states of chosen decoder layers."""

    def __init__(self, model, indices):
        self.model, self.indices, self.handles = model, sorted(set(indices)), []
        self.outputs: dict[int, torch.Tensor] = {}

    def __enter__(self) -> dict[int, torch.Tensor]:
        layers = self.model.model.layers if self.indices else []
        for index in self.indices:
            self.handles.append(layers[index].register_forward_hook(self._recorder(index)))
        return self.outputs

    def _recorder(self, index: int):
        def record(module, args, output):
            self.outputs[index] = output[0] if isinstance(output, tuple) else output
        return record

    def __exit__(self, *exc_info) -> None:
        for handle in self.handles:
            handle.remove()


def packed_forward(model, batch: PackedBatch, hidden_layers=()) -> dict:
    """One forward pass over the packs: {"logits": (N, vocab) at the positions that predict SQL tokens,
    "labels": (N,), "branch": (N,) index into batch.examples of each, "hidden": {layer: (B, L, width)}}.

    It goes through the model's own forward (so a DDP or LoRA wrapper sees the call); the output layer runs only
    at the columns where some row takes a loss.
    """
    rows, cols = batch.loss_positions.unbind(1)
    columns, where = torch.unique(cols, return_inverse=True)
    with LayerOutputs(model, hidden_layers) as hidden, attention_by_branches(model):
        logits = model(**batch.model_inputs(), logits_to_keep=columns, use_cache=False,
                       pack_layout=batch.layout or None).logits[rows, where]
    branches_before = torch.tensor([0] + [len(p.branches) for p in batch.packs[:-1]], device=rows.device).cumsum(0)
    branch = branches_before[rows] + batch.branch_index[rows, cols] - 1
    return {"logits": logits, "labels": batch.next_ids[rows, cols], "branch": branch, "hidden": dict(hidden)}


def per_branch_mean(values: torch.Tensor, branch: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of per-loss-position `values` (N,) over each branch's SQL tokens (`branch`: (N,) indices < n)."""
    sums = torch.zeros(n, device=values.device, dtype=values.dtype).index_add(0, branch, values)
    counts = torch.zeros(n, device=values.device, dtype=values.dtype).index_add(0, branch, torch.ones_like(values))
    return sums / counts.clamp(min=1)


def per_branch_loss(model, batch: PackedBatch) -> torch.Tensor:
    """Cross-entropy on each branch's SQL tokens, averaged per branch: shape (branches,), float32."""
    out = packed_forward(model, batch)
    losses = F.cross_entropy(out["logits"].float(), out["labels"], reduction="none")
    return per_branch_mean(losses, out["branch"], len(batch.examples))


class PackedData:
    """Training examples encoded once (schema prefixes shared), packed anew each epoch."""

    def __init__(self, examples: list[Example], tokenizer, prompter: Prompter, max_seq_len: int, seed: int,
                 progress: bool = True, what: str = "training"):
        self.tokenizer, self.max_seq_len, self.seed = tokenizer, max_seq_len, seed
        self.encoded: list[Encoded] = []
        self.too_long: list[Example] = []
        prefixes: dict[str, tuple[int, ...]] = {}
        for example in tqdm(examples, desc=f"encode {what} examples", unit="example", disable=not progress):
            prefix_text, branch_text = prompter.parts(example.db_path, example.question)
            if prefix_text not in prefixes:
                prefixes[prefix_text] = tuple(tokenizer(prefix_text).input_ids)
            item = Encoded(example, prefixes[prefix_text],
                           tuple(tokenizer(branch_text, add_special_tokens=False).input_ids),
                           tuple(target_ids(tokenizer, example.query)))
            fits = len(item.prefix_ids) + item.branch_length <= max_seq_len
            (self.encoded if fits else self.too_long).append(item if fits else example)
        if not self.encoded:
            raise ValueError(f"no {what} example fits max_seq_len {max_seq_len} with its schema "
                             f"({len(self.too_long)} too long)")
        if self.too_long:
            warnings.warn(f"{what}: skipped {len(self.too_long)} example(s) whose schema + question + SQL do not fit "
                          f"max_seq_len {max_seq_len} (first: index {self.too_long[0].index} of "
                          f"{self.too_long[0].db_id})", stacklevel=2)
        self._epochs: dict[int, list[Pack]] = {}

    def __len__(self) -> int:
        return len(self.encoded)

    def epoch_packs(self, epoch: int) -> list[Pack]:
        """The packs of one epoch, fixed by (seed, epoch): every example exactly once."""
        if epoch not in self._epochs:
            self._epochs = {epoch: pack_examples(self.encoded, self.max_seq_len, f"{self.seed}:{epoch}")}
        return self._epochs[epoch]

    def packs_per_epoch(self) -> int:
        return len(self.epoch_packs(0))

    def tokens_per_epoch(self) -> dict[str, int]:
        """Tokens an epoch reads, packed, and one example at a time (prefix + branch each)."""
        packed = sum(len(p) for p in self.epoch_packs(0))
        alone = sum(len(e.prefix_ids) + e.branch_length for e in self.encoded)
        return {"packed": packed, "unpacked": alone}

    def stream(self, start: int = 0):
        """Packs from overall pack position `start` onwards, epoch after epoch: a resumed run continues exactly.
        (Epochs may hold different numbers of packs, so the position is walked epoch by epoch.)"""
        epoch, offset = 0, start
        while offset >= len(self.epoch_packs(epoch)):
            offset -= len(self.epoch_packs(epoch))
            epoch += 1
        while True:
            packs = self.epoch_packs(epoch)
            yield from packs[offset:]
            epoch, offset = epoch + 1, 0


def pack_examples(encoded: list[Encoded], max_seq_len: int, seed: str) -> list[Pack]:
    """Examples in an order fixed by `seed`, grouped by schema prefix, filled into packs of <= max_seq_len tokens;
    the packs are then shuffled by the same seed."""
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    groups: dict[tuple[int, ...], list[Encoded]] = {}
    for i in order:
        groups.setdefault(encoded[i].prefix_ids, []).append(encoded[i])
    packs = []
    for prefix, items in groups.items():
        current, length = [], len(prefix)
        for item in items:
            if current and length + item.branch_length > max_seq_len:
                packs.append(Pack(prefix, tuple(current)))
                current, length = [], len(prefix)
            current.append(item)
            length += item.branch_length
        packs.append(Pack(prefix, tuple(current)))
    random.Random(f"{seed}:packs").shuffle(packs)
    return packs


def main(argv: list[str]) -> None:
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.prompting import PromptSettings
    from sqlcopilot_core.spider import load_split

    _, tokenizer = load_model(argv[0])
    data = PackedData(load_split(argv[1], "train"), tokenizer, Prompter(PromptSettings(), tokenizer), 1024, 0)
    tokens = data.tokens_per_epoch()
    print(f"{len(data)} examples in {data.packs_per_epoch()} packs: {tokens['packed']} tokens an epoch packed, "
          f"{tokens['unpacked']} one by one ({tokens['unpacked'] / tokens['packed']:.2f}x)")


if __name__ == "__main__":
    main(sys.argv[1:])
