import sqlite3

import pytest
import torch
import torch.nn.functional as F

from sqlcopilot_core.modeling import tiny_model_and_tokenizer
from sqlcopilot_core.packing import (IGNORE, PackedData, collate_packs, pack_examples, per_branch_loss,
                                     target_ids)
from sqlcopilot_core.prompting import Prompter, PromptSettings
from sqlcopilot_core.spider import Example

QUESTIONS = [
    ("How many singers are there?", "SELECT count(*) FROM singer"),
    ("Names of singers from France?", "SELECT name FROM singer WHERE country = 'France'"),
    ("How many concerts?", "SELECT count(*) FROM concert"),
    ("Which singer is the oldest?", "SELECT name FROM singer ORDER BY age DESC LIMIT 1"),
    ("List concert names and their singers' names.",
     "SELECT T1.name, T2.name FROM concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id"),
]


@pytest.fixture()
def concert_examples(tmp_path) -> list[Example]:
    db = tmp_path / "database" / "concerts" / "concerts.sqlite"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE singer(singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
            CREATE TABLE concert(concert_id INTEGER PRIMARY KEY, name TEXT,
                                 singer_id INTEGER REFERENCES singer(singer_id));
            INSERT INTO singer VALUES (1, 'Joe', 'France', 40), (2, 'Ann', 'Spain', 30);
            INSERT INTO concert VALUES (1, 'Summer', 1), (2, 'Winter', 2);""")
    return [Example(q, sql, "concerts", db, i) for i, (q, sql) in enumerate(QUESTIONS)]


def data_for(examples, tokenizer, max_seq_len=4096, seed=0):
    prompter = Prompter(PromptSettings(max_schema_tokens=None), tokenizer)
    return PackedData(examples, tokenizer, prompter, max_seq_len, seed, progress=False)


def loss_alone(model, tokenizer, encoded) -> torch.Tensor:
    """The example's SQL cross-entropy computed the plain way: one causal sequence, full logits, no packing."""
    ids = torch.tensor([encoded.prompt_ids + list(encoded.target_ids)])
    logits = model(input_ids=ids).logits[0, :-1]
    labels = ids[0, 1:].clone()
    labels[:len(encoded.prompt_ids) - 1] = IGNORE
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)


def test_each_branch_of_a_pack_has_the_loss_of_its_example_alone(concert_examples):
    model, tokenizer = tiny_model_and_tokenizer(seed=3)
    data = data_for(concert_examples, tokenizer)
    packs = data.epoch_packs(0)
    assert len(packs) == 1 and len(packs[0].branches) == len(QUESTIONS)  # one schema: one pack holds them all
    batch = collate_packs(packs, tokenizer.pad_token_id)
    packed = per_branch_loss(model, batch)
    alone = torch.stack([loss_alone(model, tokenizer, e) for e in batch.examples])
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-4)


def test_padded_rows_and_several_packs_keep_every_branch_loss(concert_examples):
    model, tokenizer = tiny_model_and_tokenizer(seed=4)
    data = data_for(concert_examples, tokenizer)
    prefix_len = len(data.encoded[0].prefix_ids)
    longest = max(e.branch_length for e in data.encoded)
    packs = pack_examples(data.encoded, prefix_len + 2 * longest, "7")  # at most two of the longest a pack
    assert len(packs) >= 2 and sum(len(p.branches) for p in packs) == len(QUESTIONS)
    batch = collate_packs(packs, tokenizer.pad_token_id)
    assert (batch.branch_index == -1).any()  # shorter packs are padded
    packed = per_branch_loss(model, batch)
    alone = torch.stack([loss_alone(model, tokenizer, e) for e in batch.examples])
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-4)


def test_mask_positions_and_labels(concert_examples):
    _, tokenizer = tiny_model_and_tokenizer()
    data = data_for(concert_examples[:2], tokenizer)
    batch = collate_packs(data.epoch_packs(0), tokenizer.pad_token_id)
    first, second = batch.examples
    prefix = len(first.prefix_ids)
    start2 = prefix + first.branch_length
    mask = batch.mask[0, 0]
    assert mask[start2, :prefix].all() and not mask[start2, prefix:start2].any()  # branch 2 skips branch 1
    assert batch.position_ids[0, start2].item() == prefix  # positions continue from the schema's end
    labels = batch.next_ids[0][batch.next_ids[0] != IGNORE].tolist()
    assert labels == list(first.target_ids) + list(second.target_ids)
    assert tokenizer.decode(list(second.target_ids)) == second.example.query + tokenizer.eos_token


def test_packed_gradients_equal_the_sum_over_examples_alone(concert_examples):
    model, tokenizer = tiny_model_and_tokenizer(seed=5)
    data = data_for(concert_examples[:3], tokenizer)
    batch = collate_packs(data.epoch_packs(0), tokenizer.pad_token_id)
    per_branch_loss(model, batch).sum().backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(loss_alone(model, tokenizer, e) for e in batch.examples).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(packed[name], param.grad, rtol=1e-3, atol=1e-5)


def test_packing_reads_each_schema_once_and_every_epoch_differs(concert_examples):
    _, tokenizer = tiny_model_and_tokenizer()
    data = data_for(concert_examples * 4, tokenizer, max_seq_len=1024)
    tokens, packs = data.tokens_per_epoch(), data.epoch_packs(0)
    prefix, branches = len(data.encoded[0].prefix_ids), sum(e.branch_length for e in data.encoded)
    assert tokens == {"packed": len(packs) * prefix + branches, "unpacked": len(data) * prefix + branches}
    assert len(packs) < len(data) / 4
    epoch0 = [[e.example.index for e in p.branches] for p in data.epoch_packs(0)]
    epoch1 = [[e.example.index for e in p.branches] for p in data.epoch_packs(1)]
    assert sorted(i for p in epoch0 for i in p) == sorted(i for p in epoch1 for i in p) and epoch0 != epoch1
    assert all(len(p) <= 1024 for p in data.epoch_packs(0))
    stream = data.stream(start=len(epoch0) + 1)  # resumes inside epoch 1
    assert [e.example.index for e in next(stream).branches] == epoch1[1]


def test_an_example_that_cannot_fit_is_skipped_and_counted(concert_examples):
    _, tokenizer = tiny_model_and_tokenizer()
    prompt_len = len(Prompter(PromptSettings(max_schema_tokens=None), tokenizer).ids(
        concert_examples[0].db_path, QUESTIONS[4][0]))
    limit = prompt_len + len(target_ids(tokenizer, QUESTIONS[4][1])) - 1
    with pytest.warns(UserWarning, match="skipped 1 example"):
        data = data_for(concert_examples, tokenizer, max_seq_len=limit)
    assert len(data) == 4 and data.too_long[0].index == 4
