import sqlite3

import pytest
import torch
from transformers import GenerationConfig

from sqlcopilot_core.evaluation import read_predictions
from sqlcopilot_core.generate import (PredictConfig, decode_tokens_per_s, example_prompt_ids, greedy_generate,
                                      greedy_generate_ids, predict_details, predict_examples, write_predictions_jsonl)
from sqlcopilot_core.modeling import tiny_model_and_tokenizer
from sqlcopilot_core.prompting import PromptSettings, Prompter, example_prompt
from sqlcopilot_core.spider import Example

PET_QUERIES = [
    ("How many pets are there?", "SELECT count(*) FROM pets"),
    ("List the names of all pets.", "SELECT name FROM pets"),
    ("What is the age of Rex?", "SELECT age FROM pets WHERE name = 'Rex'"),
    ("Which pets are older than 3?", "SELECT name FROM pets WHERE age > 3"),
]


@pytest.fixture()
def pet_examples(tmp_path) -> list[Example]:
    """A one-table database and four questions about it: prompts of ~150 byte tokens for the tiny model."""
    db = tmp_path / "database" / "pets" / "pets.sqlite"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE pets(id INTEGER PRIMARY KEY, name TEXT, age INTEGER);"
                           "INSERT INTO pets VALUES (1, 'Rex', 5), (2, 'Tom', 2), (3, 'Kit', 4);")
    return [Example(question, query, "pets", db, i) for i, (question, query) in enumerate(PET_QUERIES)]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer(seed=0)


def test_batched_generation_equals_one_at_a_time_and_hf_generate(tiny):
    model, tokenizer = tiny
    prompts = [tokenizer(p).input_ids for p in ["SELECT name FROM", "a much longer prompt, padded less", "x"]]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    batched = greedy_generate_ids(model, prompts, 12, eos, pad, stop_at_eos=False)
    assert batched == [greedy_generate_ids(model, [p], 12, eos, pad, stop_at_eos=False)[0] for p in prompts]
    reference = GenerationConfig(do_sample=False, max_new_tokens=12, min_new_tokens=12, pad_token_id=pad)
    for prompt, mine in zip(prompts, batched):
        theirs = model.generate(torch.tensor([prompt]), generation_config=reference)[0, len(prompt):].tolist()
        assert mine == theirs


def test_generation_stops_at_end_of_text_and_keeps_input_order(tiny):
    model, tokenizer = tiny
    prompts = ["short", "a considerably longer prompt than the first"]
    free = greedy_generate_ids(model, [tokenizer(p).input_ids for p in prompts], 10, -1, tokenizer.pad_token_id)
    # Pretend the 4th token the model writes for the first prompt is end-of-text: generation must stop before it.
    stop = free[0][3]
    stopped = greedy_generate_ids(model, [tokenizer(prompts[0]).input_ids], 10, stop, tokenizer.pad_token_id)[0]
    assert stopped == free[0][:free[0].index(stop)]
    texts = greedy_generate(model, tokenizer, [tokenizer(p).input_ids for p in prompts], 10, batch_size=1,
                            progress=False)
    assert texts == [tokenizer.decode(f, skip_special_tokens=True) for f in free]


def test_prompt_ids_are_the_prompt_text_tokenized_in_its_two_parts(pet_examples, tiny):
    _, tokenizer = tiny
    for settings in (PromptSettings(), PromptSettings(form="create_table", values_per_column=2, max_schema_tokens=60)):
        ids = example_prompt_ids(pet_examples, settings, tokenizer)
        texts = [example_prompt(e.db_path, e.question, settings, tokenizer) for e in pet_examples]
        assert [tokenizer.decode(i) for i in ids] == texts
        prefix, branch = Prompter(settings, tokenizer).parts(pet_examples[0].db_path, pet_examples[0].question)
        assert ids[0] == tokenizer(prefix).input_ids + tokenizer(branch, add_special_tokens=False).input_ids


def test_predictions_file_is_what_the_evaluator_reads(pet_examples, tiny, tmp_path):
    model, tokenizer = tiny
    preds = predict_examples(model, tokenizer, pet_examples, PredictConfig(max_new_tokens=6, limit=3), progress=False)
    assert len(preds) == 3 and all(isinstance(p, str) and "\n" not in p for p in preds)
    path = write_predictions_jsonl(tmp_path / "out" / "preds.jsonl", pet_examples, preds)
    assert read_predictions(path, pet_examples[:3]) == preds


def test_decode_speed_and_config_checks(tiny):
    model, tokenizer = tiny
    assert decode_tokens_per_s(model, tokenizer, tokenizer("SELECT").input_ids, n_tokens=8) > 0
    assert not model.training
    with pytest.raises(ValueError, match="limit must be >= 1"):
        PredictConfig(limit=0)


def test_prefix_reuse_gives_the_tokens_of_a_full_prefill(pet_examples, tiny):
    from sqlcopilot_core.generate import predict_details

    model, tokenizer = tiny
    settings = PromptSettings(max_schema_tokens=None, value_hints=0)
    for decoding in ("greedy", "beam"):
        whole = predict_details(model, tokenizer, pet_examples,
                                PredictConfig(settings, max_new_tokens=12, batch_size=3, decoding=decoding,
                                              num_beams=3, prefix_reuse=False), progress=False)
        reused = predict_details(model, tokenizer, pet_examples,
                                 PredictConfig(settings, max_new_tokens=12, batch_size=3, decoding=decoding,
                                               num_beams=3, prefix_reuse=True), progress=False)
        assert [a["sql"] for a in reused] == [a["sql"] for a in whole]


def test_guided_and_constrained_decoding_record_their_choice(pet_examples, tiny):
    from sqlcopilot_core.generate import predict_details

    model, tokenizer = tiny
    config = PredictConfig(PromptSettings(value_hints=0), max_new_tokens=10, decoding="guided", num_beams=3,
                           constrained=True, retry_beams=0)
    answers = predict_details(model, tokenizer, pet_examples, config, progress=False)
    assert len(answers) == len(pet_examples)
    for answer in answers:
        assert 1 <= answer["tried"] <= answer["candidates"] <= 3
        assert len(answer["rejected"]) == answer["tried"] - 1  # all tried but the answer
    with pytest.raises(ValueError, match="decoding"):
        PredictConfig(decoding="sampled")
    with pytest.raises(ValueError, match="num_beams"):
        PredictConfig(decoding="beam", num_beams=0)


def test_a_guided_question_nothing_ran_for_is_decoded_again_with_more_beams(pet_examples, tiny):
    """The random tiny model's single beam writes SQL that does not run: the question is decoded again with
    retry_beams beams, whose answer is that of a search with that many beams, and the first search is kept."""
    from sqlcopilot_core.generate import predict_details

    model, tokenizer = tiny
    settings = PromptSettings(value_hints=0)
    retried = predict_details(model, tokenizer, pet_examples,
                              PredictConfig(settings, max_new_tokens=10, decoding="guided", num_beams=1,
                                            retry_beams=3), progress=False)
    wide = predict_details(model, tokenizer, pet_examples,
                           PredictConfig(settings, max_new_tokens=10, decoding="guided", num_beams=3, retry_beams=0),
                           progress=False)
    once = predict_details(model, tokenizer, pet_examples,
                           PredictConfig(settings, max_new_tokens=10, decoding="guided", num_beams=1, retry_beams=0),
                           progress=False)
    assert any(a["error"] for a in once)  # the crafted case: a single beam of random weights does not run
    for first, again, three in zip(once, retried, wide):
        assert "retried" not in first and "retried" not in three
        if first["error"] is None:
            assert "retried" not in again and again["sql"] == first["sql"]
        else:
            assert again["retried"] == {"num_beams": 3, "first_error": first["error"],
                                        "first_candidates": first["candidate_sqls"]}
            assert (again["sql"], again["candidate_sqls"]) == (three["sql"], three["candidate_sqls"])
    with pytest.raises(ValueError, match="retry_beams"):
        PredictConfig(decoding="guided", retry_beams=17)


def test_constrained_search_with_no_candidate_answers_from_an_unconstrained_one(pet_examples, tiny, monkeypatch):
    """A question for which the schema constraint ends every beam (crafted: it refuses every token) still gets SQL
    to show and try, decoded without the constraint, and the answer says so."""
    from sqlcopilot_core.beams import NO_CONSTRAINED_CANDIDATE, decode_with_fallback, hf_beam_generate
    from sqlcopilot_core.sqlconstraint import SchemaConstraint

    model, tokenizer = tiny
    monkeypatch.setattr(SchemaConstraint, "advance", lambda self, state, token: None)
    constraint = SchemaConstraint.for_database(pet_examples[0].db_path, tokenizer)
    prompt = tokenizer("SELECT").input_ids
    assert hf_beam_generate(model, prompt, 2, 4, tokenizer.eos_token_id, constraint=constraint) == []
    calls = []

    def decode(constrained):
        calls.append(constrained)
        found = hf_beam_generate(model, prompt, 2, 4, tokenizer.eos_token_id,
                                 constraint=constraint if constrained else None)
        return found, {"decode_ms": 2.0, "prefix_reused": constrained}

    candidates, extra, note = decode_with_fallback(decode, True)
    assert calls == [True, False] and len(candidates) == 2 and note == NO_CONSTRAINED_CANDIDATE
    assert extra == {"decode_ms": 2.0, "prefix_reused": False,  # the second search's, and the first one's
                     "constrained_decode_ms": 2.0, "constrained_prefix_reused": True}
    config = PredictConfig(max_new_tokens=4, limit=2, decoding="guided", num_beams=2, constrained=True,
                           retry_beams=0)
    answers = predict_details(model, tokenizer, pet_examples, config, progress=False)
    assert all(a["fallback"] == NO_CONSTRAINED_CANDIDATE and a["candidates"] == 2 for a in answers)
