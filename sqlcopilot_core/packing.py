"""Shared-schema packing: the training data path of finetune and distill.

    python -m sqlcopilot_core.packing work/smollm2_base ../shared/spider     # tokens per epoch, packed vs one by one

A Spider database has ~50 training questions, and its schema is ~4x longer than a question and its SQL. Read one
example at a time, an epoch re-reads every schema ~50 times. A pack reads it once:

    [schema prefix][hints + question 1 + SQL 1][hints + question 2 + SQL 2] ...

Each branch attends to the schema prefix and to itself only (a 4-D boolean attention mask passed to sdpa), and its
position ids continue from the prefix's end, so every branch sees exactly the tokens and positions it would see
alone: its loss is the loss of that example computed on its own (tests/core/test_packing.py checks this to 1e-4).
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
                           self.next_ids.to(device), self.branch_index.to(device), self.packs)


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
    return PackedBatch(ids, mask[:, None], positions, next_ids, branch, packs)


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
    with LayerOutputs(model, hidden_layers) as hidden:
        logits = model(**batch.model_inputs(), logits_to_keep=columns, use_cache=False).logits[rows, where]
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
