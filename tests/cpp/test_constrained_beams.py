"""Schema-constrained beams in the C++ runner: a request's "constraint" (sqlconstraint.constraint_spec) gives the
candidates Python's beams.beam_search gives with sqlconstraint.SchemaConstraint over the same graph, token for
token, on the kernel and the graph path, with 4 beams and with one (constrained greedy decoding).

    .venv/bin/python -m pytest -q -s tests/cpp/test_constrained_beams.py
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch

from sqlcopilot_core.cpp_runtime import CppRunner, RunnerError
from sqlcopilot_core.export import load_exported
from sqlcopilot_core.sqlconstraint import SchemaConstraint, constraint_spec
from tests.core.test_export import PROMPTS, prompt_ids
from tests.cpp.test_beams import NEW_TOKENS, PATHS, skip_without_kernels
from tests.cpp.test_runner import KERNELS, built, expected_cases, tiny_exports  # noqa: F401 (session fixtures)

# the test prompts and two that end where a query starts, so the constraint bites from the first token
CONSTRAINED_PROMPTS = PROMPTS + ["-- how many singers?\nSELECT", "-- names of concerts after 2014\nSELECT name FROM "]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def schema_db(tmp_path_factory) -> Path:
    """A small SQLite database with two tables (the constraint's names)."""
    path = tmp_path_factory.mktemp("constraint_db") / "concerts.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
        db.execute("CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, name TEXT, year INTEGER, "
                   "singer_id INTEGER REFERENCES singer(singer_id))")
        db.execute("INSERT INTO singer VALUES (1, 'Ann', 31), (2, 'Bo', 45)")
        db.execute("INSERT INTO concert VALUES (1, 'Spring', 2014, 1), (2, 'Fall', 2015, 2)")
    return path


def token_text(constraint: SchemaConstraint, tokens) -> str:
    return "".join(constraint.token_texts[t] for t in tokens)


@pytest.mark.parametrize("decode, threads", PATHS)
@pytest.mark.parametrize("export", ["float32", "pruned"])
def test_cpp_constrained_beams_equal_python_s(built, tiny_exports, schema_db, export, decode, threads):
    skip_without_kernels(decode)
    exported = load_exported(tiny_exports[export])
    tokenizer = exported.tokenizer()
    spec = constraint_spec(schema_db)
    assert set(spec["tables"]) == {"singer", "concert"}
    changed, walked = 0, 0
    with CppRunner(built["runner"], tiny_exports[export], threads=threads, decode=decode) as runner:
        for prompt in CONSTRAINED_PROMPTS:
            ids = tokenizer(prompt).input_ids
            for num_beams in (1, 4):
                for stop in (False, True):
                    constraint = SchemaConstraint.for_database(schema_db, tokenizer)
                    stop_ids = exported.stop_token_ids if stop else frozenset()
                    expected = exported.beams_exported(ids, num_beams, NEW_TOKENS, stop_ids, constraint=constraint)
                    got, timings = runner.beams(ids, num_beams, NEW_TOKENS, stop_at_statement_end=stop,
                                                constraint=spec)
                    assert [c.tokens for c in got] == [c.tokens for c in expected], (prompt, num_beams, stop)
                    assert all(abs(a.score - b.score) < 1e-3 for a, b in zip(got, expected))
                    assert len(got) == len(expected) >= 1 and timings["decode"] == decode
                    for candidate in got:  # every candidate is a valid SQL prefix over the database's names
                        assert constraint.accepts(token_text(constraint, candidate.tokens)), candidate
                        assert constraint.accepts(tokenizer.decode(candidate.tokens, skip_special_tokens=True))
                    free, _ = runner.beams(ids, num_beams, NEW_TOKENS, stop_at_statement_end=stop)
                    changed += [c.tokens for c in free] != [c.tokens for c in got]
                    walked += 1
    print(f"\n{export} ({decode}, {threads} thread(s)): the constraint changed the candidates of {changed}/{walked} "
          "requests")
    assert changed > 0


def test_constrained_one_beam_is_constrained_greedy(built, tiny_exports, schema_db):
    """num_beams 1: each step's token is the most probable one the constraint accepts."""
    exported = load_exported(tiny_exports["float32"])
    tokenizer = exported.tokenizer()
    with CppRunner(built["runner"], tiny_exports["float32"], threads=1) as runner:
        for prompt in CONSTRAINED_PROMPTS:
            ids = tokenizer(prompt).input_ids
            (beam,), _ = runner.beams(ids, 1, NEW_TOKENS, constraint=constraint_spec(schema_db))
            constraint = SchemaConstraint.for_database(schema_db, tokenizer)
            state, tokens = constraint.start(), []
            with torch.inference_mode():
                caches = exported.new_caches()
                logits = exported.prefill(torch.tensor([ids]), caches)
                for pos in range(len(ids), len(ids) + NEW_TOKENS):
                    order = logits[0].float().log_softmax(-1).argsort(descending=True, stable=True).tolist()
                    token, state = next((t, s) for t in order if (s := constraint.advance(state, t)) is not None)
                    if token == exported.eos_token_id:
                        break
                    tokens.append(token)
                    if len(tokens) == NEW_TOKENS:
                        break
                    logits = exported.decode_step(token, pos, caches)
            assert list(beam.tokens) == tokens, prompt


def test_python_constrained_reference_matches_transformers(tiny_exports, schema_db):
    """The graph's constrained beams equal beams.hf_beam_generate's with the same constraint on the transformers
    model the export came from."""
    from sqlcopilot_core.beams import hf_beam_generate
    from sqlcopilot_core.modeling import load_model

    model, tokenizer = load_model(tiny_exports["uniform_model"])
    exported = load_exported(tiny_exports["float32"])
    for prompt in CONSTRAINED_PROMPTS:
        ids = tokenizer(prompt).input_ids
        for num_beams in (1, 4):
            with torch.inference_mode():
                expected = hf_beam_generate(model.eval(), ids, num_beams, NEW_TOKENS, tokenizer.eos_token_id,
                                            constraint=SchemaConstraint.for_database(schema_db, tokenizer))
            got = exported.beams_exported(ids, num_beams, NEW_TOKENS,
                                          constraint=SchemaConstraint.for_database(schema_db, tokenizer))
            assert [c.tokens for c in got] == [c.tokens for c in expected], (prompt, num_beams)


def test_constraint_with_prefix_reuse(built, tiny_exports, schema_db):
    exported = load_exported(tiny_exports["float32"])
    tokenizer = exported.tokenizer()
    prefix = tokenizer("-- schema\nCREATE TABLE singer (name, age);\n").input_ids
    spec = constraint_spec(schema_db)
    with CppRunner(built["runner"], tiny_exports["float32"], threads=1) as runner:
        for question in ["-- how many singers?\nSELECT", "-- oldest\nSELECT name"]:
            ids = prefix + tokenizer(question, add_special_tokens=False).input_ids
            expected = exported.beams_exported(ids, 4, NEW_TOKENS, constraint=SchemaConstraint.for_database(
                schema_db, tokenizer))
            got, _ = runner.beams(ids, 4, NEW_TOKENS, prefix_len=len(prefix), constraint=spec)
            assert [c.tokens for c in got] == [c.tokens for c in expected]


def test_bad_constrained_requests_are_refused_and_the_runner_keeps_serving(built, tiny_exports, schema_db):
    spec = constraint_spec(schema_db)
    requests = [{"id": 1, "input_ids": [65, 66], "num_beams": 2, "constraint": {"tables": []}},
                {"id": 2, "input_ids": [65, 66], "constraint": spec},
                {"id": 3, "input_ids": [65, 66], "num_beams": 2, "max_new_tokens": 3, "constraint": spec}]
    served = subprocess.run([built["runner"], "--model", str(tiny_exports["float32"]), "--threads", "1"],
                            input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True,
                            check=True)
    replies = [json.loads(line) for line in served.stdout.splitlines()]
    assert "constraint" in replies[0]["error"] and "tables" in replies[0]["error"]
    assert "num_beams" in replies[1]["error"]
    assert len(replies[2]["beams"]) >= 1 and replies[2]["constraint_checks"] >= 1
    assert 0 <= replies[2]["walk_ms"] <= replies[2]["decode_ms"]


def test_an_export_without_token_texts_is_named(built, tiny_exports, schema_db, tmp_path):
    copy = Path(shutil.copytree(tiny_exports["float32"], tmp_path / "old_export"))
    (copy / "token_texts.json").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["token_texts.json"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with CppRunner(built["runner"], copy, threads=1) as runner:
        with pytest.raises(RunnerError, match="token_texts.json: not found"):
            runner.beams([65, 66], 2, 4, constraint=constraint_spec(schema_db))
        assert runner.beams([65, 66], 2, 4)[0]  # unconstrained requests still served
