"""Beam decoding and prefix reuse in the C++ runner: its candidates equal the Python reference over the same graph
(decoder.beam_generate with beams.beam_search's bookkeeping) token for token, on the kernel and the graph path.

    .venv/bin/python -m pytest -q -s tests/cpp/test_beams.py
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from sqlcopilot_core.cpp_runtime import CppRunner, RunnerError
from sqlcopilot_core.export import load_exported
from tests.core.test_export import PROMPTS, prompt_ids
from tests.cpp.test_runner import KERNELS, built, expected_cases, tiny_exports  # noqa: F401 (session fixtures)

NEW_TOKENS = 16
PATHS = [("kernel", 1), ("kernel", 2), ("graph", 1)]
# a shared "schema" prefix and questions after it, as Prompter.ids builds prompts
PREFIX = "-- schema\nCREATE TABLE s (a, b);\n"  # the tiny tokenizer spends a token per byte
QUESTIONS = ["-- how many s?\n", "-- largest a\n", "-- b of s\n"]

pytestmark = pytest.mark.slow


def skip_without_kernels(decode: str) -> None:
    if decode == "kernel" and not KERNELS:
        pytest.skip("this CPU lacks AVX-512F: the runner decodes with the graph only")


def prefixed_prompts(exported) -> tuple[list[list[int]], int]:
    tokenizer = exported.tokenizer()
    prefix = tokenizer(PREFIX).input_ids
    return [prefix + tokenizer(q, add_special_tokens=False).input_ids for q in QUESTIONS], len(prefix)


@pytest.mark.parametrize("decode, threads", PATHS)
@pytest.mark.parametrize("export", ["float32", "pruned"])
def test_cpp_beams_equal_the_python_reference(built, tiny_exports, export, decode, threads):
    skip_without_kernels(decode)
    exported = load_exported(tiny_exports[export])
    tokenizer = exported.tokenizer()
    stop_ids = exported.stop_token_ids
    assert stop_ids, "the export lists its statement-end tokens"
    largest = 0.0
    with CppRunner(built["runner"], tiny_exports[export], threads=threads, decode=decode) as runner:
        for prompt in PROMPTS:
            ids = prompt_ids(tokenizer, prompt)[0].tolist()
            for stop in (False, True):
                expected = exported.beams_exported(ids, 4, NEW_TOKENS, stop_ids if stop else frozenset())
                got, timings = runner.beams(ids, 4, NEW_TOKENS, stop_at_statement_end=stop)
                assert [c.tokens for c in got] == [c.tokens for c in expected], (prompt, stop)
                assert len(got) == 4 and timings["decode"] == decode and timings["steps"] >= 1
                assert timings["new_tokens"] == timings["steps"] + 1 >= max(len(c.tokens) for c in got)
                largest = max(largest, *(abs(a.score - b.score) for a, b in zip(got, expected)))
                assert all(a.normalized == pytest.approx(a.score / max(1, len(a.tokens))) for a in got)
    print(f"\n{export} ({decode}, {threads} thread(s)): 4 beams, largest |score difference| vs Python {largest:.3g}")
    assert largest < 1e-3


@pytest.mark.parametrize("decode, threads", PATHS)
def test_one_beam_is_greedy(built, tiny_exports, decode, threads):
    skip_without_kernels(decode)
    exported = load_exported(tiny_exports["pruned"])
    eos = exported.eos_token_id
    with CppRunner(built["runner"], tiny_exports["pruned"], threads=threads, decode=decode) as runner:
        for prompt in PROMPTS:
            ids = prompt_ids(exported.tokenizer(), prompt)[0].tolist()
            (greedy, _), = runner.generate([ids], NEW_TOKENS)
            (beam,), _ = runner.beams(ids, 1, NEW_TOKENS)
            assert list(beam.tokens) == [t for t in greedy if t != eos]  # a beam's tokens exclude end-of-text
            assert [list(c.tokens) for c in exported.beams_exported(ids, 1, NEW_TOKENS)] == [list(beam.tokens)]


def test_greedy_stops_after_a_stop_id_like_python(built, tiny_exports):
    exported = load_exported(tiny_exports["float32"])
    ids = prompt_ids(exported.tokenizer(), PROMPTS[0])[0].tolist()
    free = exported.generate_exported(ids, NEW_TOKENS)
    stop = {free[2]}  # the third token ends the statement
    with CppRunner(built["runner"], tiny_exports["float32"], threads=1) as runner:
        (stopped, _), = runner.generate([ids], NEW_TOKENS, stop_ids=stop)
    assert stopped == exported.generate_exported(ids, NEW_TOKENS, frozenset(stop)) == free[:free.index(free[2]) + 1]


@pytest.mark.parametrize("decode, threads", PATHS)
@pytest.mark.parametrize("num_beams", [1, 4])
def test_prefix_reuse_gives_the_full_prefill_tokens(built, tiny_exports, decode, threads, num_beams):
    skip_without_kernels(decode)
    exported = load_exported(tiny_exports["float32"])
    prompts, prefix_len = prefixed_prompts(exported)
    with CppRunner(built["runner"], tiny_exports["float32"], threads=threads, decode=decode) as runner:
        for index, ids in enumerate(prompts):
            if num_beams == 1:
                (full, full_timings), = runner.generate([ids], NEW_TOKENS)
                (reused, timings), = runner.generate([ids], NEW_TOKENS, prefix_len=prefix_len)
                assert full == reused == exported.generate_exported(ids, NEW_TOKENS)
            else:
                full, full_timings = runner.beams(ids, num_beams, NEW_TOKENS)
                reused, timings = runner.beams(ids, num_beams, NEW_TOKENS, prefix_len=prefix_len)
                expected = exported.beams_exported(ids, num_beams, NEW_TOKENS)
                assert [c.tokens for c in full] == [c.tokens for c in reused] == [c.tokens for c in expected]
                assert [c.tokens for c in exported.beams_exported(ids, num_beams, NEW_TOKENS, prefix_len=prefix_len)] \
                    == [c.tokens for c in expected]
            assert not full_timings["prefix_reused"] and timings["prefix_reused"] == (index > 0)
        # the whole prompt as the prefix: its kept last-position logits start the decoding
        (whole, _), = runner.generate([prompts[0]], NEW_TOKENS, prefix_len=len(prompts[0]))
        (again, timings), = runner.generate([prompts[0]], NEW_TOKENS, prefix_len=len(prompts[0]))
        assert whole == again == exported.generate_exported(prompts[0], NEW_TOKENS) and timings["prefix_reused"]


@pytest.mark.parametrize("decode, threads", PATHS)
@pytest.mark.parametrize("export", ["float32", "pruned"])
def test_questions_decoded_together_give_their_tokens_alone(built, tiny_exports, decode, threads, export):
    """A batch of questions about one schema (rows of one decode step, started as rows free up: 16 rows hold four
    questions of 4 beams, so the fifth and sixth wait for one to end) gives each question the candidates it gets
    alone, with 1 and 4 beams, with statement stops, and with the whole prompt as the prefix."""
    skip_without_kernels(decode)
    exported = load_exported(tiny_exports[export])
    tokenizer = exported.tokenizer()
    prompts, prefix_len = prefixed_prompts(exported)
    extra = ["-- s where a > 1, ordered by b\n", "-- s\n", "-- count b\n"]
    prompts += [prompts[0][:prefix_len] + tokenizer(q, add_special_tokens=False).input_ids for q in extra]
    prompts.append(prompts[0][:prefix_len])  # no question: the prompt is the prefix
    with CppRunner(built["runner"], tiny_exports[export], threads=threads, decode=decode) as runner:
        for num_beams, stop in ((1, False), (4, False), (4, True)):
            alone = [runner.beams(ids, num_beams, NEW_TOKENS, prefix_len=prefix_len, stop_at_statement_end=stop)[0]
                     for ids in prompts]
            together, batch_ms = runner.beams_batch([(ids, prefix_len) for ids in prompts], num_beams, NEW_TOKENS,
                                                    stop_at_statement_end=stop)
            assert [[c.tokens for c in found] for found, _ in together] == [[c.tokens for c in a] for a in alone]
            for (found, timings), single in zip(together, alone):
                assert max(abs(a.score - b.score) for a, b in zip(found, single)) < 1e-3
                assert timings["prefix_reused"] and timings["decode"] == decode
            assert batch_ms > 0
        # prompts of different prefixes are decoded one after another, with the same candidates
        other = [66] + prompts[1][1:]
        mixed, _ = runner.beams_batch([(prompts[0], prefix_len), (other, prefix_len)], 2, NEW_TOKENS)
        assert [[c.tokens for c in found] for found, _ in mixed] == \
            [[c.tokens for c in runner.beams(ids, 2, NEW_TOKENS, prefix_len=prefix_len)[0]]
             for ids in (prompts[0], other)]


def test_a_bad_prompt_in_a_batch_is_named(built, tiny_exports):
    with CppRunner(built["runner"], tiny_exports["float32"], threads=1) as runner:
        with pytest.raises(RunnerError, match=r"batch prompt 1: .*outside the vocabulary"):
            runner.beams_batch([([65, 66, 67], 2), ([65, 66, 10 ** 7], 2)], 2, 4)
        with pytest.raises(RunnerError, match=r"batch prompt 0: num_beams 17 is outside 1..16"):
            runner.beams_batch([([65, 66, 67], 2)], 17, 4)
        (found, _), = runner.beams_batch([([65, 66, 67], 2)], 2, 4)[0]  # and it keeps serving
        assert len(found) == 2


def test_prefix_cache_keeps_the_most_recent_prefixes(built, tiny_exports):
    exported = load_exported(tiny_exports["float32"])
    prompts, prefix_len = prefixed_prompts(exported)
    others = [[65 + i] + ids[1:] for i, ids in enumerate(prompts)]  # three more prefixes, one token apart
    with CppRunner(built["runner"], tiny_exports["float32"], threads=1, prefix_cache=2) as runner:
        reused = [runner.generate([ids], 2, prefix_len=prefix_len)[0][1]["prefix_reused"]
                  for ids in [prompts[0], others[0], prompts[0], others[1], others[2], prompts[0]]]
    assert reused == [False, False, True, False, False, False]


def test_bad_beam_requests_are_refused_and_the_runner_keeps_serving(built, tiny_exports):
    requests = [{"id": 1, "input_ids": [65, 66], "num_beams": 0},
                {"id": 2, "input_ids": [65, 66], "num_beams": 17},
                {"id": 3, "input_ids": [65, 66], "prefix_len": 3},
                {"id": 4, "input_ids": [65, 66], "num_beams": "four"},
                {"id": 5, "input_ids": [65, 66, 67], "num_beams": 2, "max_new_tokens": 3}]
    served = subprocess.run([built["runner"], "--model", str(tiny_exports["float32"]), "--threads", "1"],
                            input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True,
                            check=True)
    replies = [json.loads(line) for line in served.stdout.splitlines()]
    assert replies[0] == {"id": 1, "error": "num_beams 0 is outside 1..16"}
    assert replies[1] == {"id": 2, "error": "num_beams 17 is outside 1..16"}
    assert replies[2] == {"id": 3, "error": "prefix_len 3 is outside 0..2 (the prompt's length)"}
    assert "error" in replies[3]
    beams = replies[4]["beams"]
    assert len(beams) == 2 and all(1 <= len(b["output_ids"]) <= 3 for b in beams) and replies[4]["steps"] >= 1
    assert beams[0]["normalized_score"] >= beams[1]["normalized_score"]
    with CppRunner(built["runner"], tiny_exports["float32"], threads=1) as runner:
        with pytest.raises(RunnerError, match="num_beams 0 is outside 1..16"):
            runner.beams([65, 66], 0, 4)
        with pytest.raises(RunnerError, match="constraint: .*expected"):  # a malformed schema constraint
            runner.beams([65, 66], 2, 4, constraint={"tables": []})
        assert runner.generate([[65, 66]], 2)[0][0]  # still serving


def test_beams_end_when_the_cache_is_full(built, tiny_exports):
    exported = load_exported(tiny_exports["float32"])
    ids = [65] * (exported.max_seq_len - 3)
    with CppRunner(built["runner"], tiny_exports["float32"], threads=1) as runner:
        got, _ = runner.beams(ids, 3, 50, stop_at_eos=False)
    expected = exported.beams_exported(ids, 3, 50, stop_at_eos=False)
    assert [c.tokens for c in got] == [c.tokens for c in expected] and {len(c.tokens) for c in got} == {4}


def test_python_beam_reference_matches_transformers_beams(tiny_exports):
    """The graph's beams equal beams.hf_beam_generate on the transformers model it was exported from."""
    from sqlcopilot_core.beams import hf_beam_generate
    from sqlcopilot_core.modeling import load_model

    model, tokenizer = load_model(tiny_exports["uniform_model"])
    exported = load_exported(tiny_exports["float32"])
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)[0].tolist()
        with torch.inference_mode():
            expected = hf_beam_generate(model.eval(), ids, 4, NEW_TOKENS, tokenizer.eos_token_id)
        assert [c.tokens for c in exported.beams_exported(ids, 4, NEW_TOKENS)] == [c.tokens for c in expected]


@pytest.mark.parametrize("decode, threads", PATHS)
@pytest.mark.parametrize("export", ["bfloat16", "pruned_bfloat16"])
def test_bfloat16_beams(built, tiny_exports, export, decode, threads):
    """The graph path runs the very graph Python runs: the same candidates. The kernels round bfloat16 sums in
    another order than oneDNN (see test_runner), so their scores are compared within a tolerance."""
    from tests.cpp.test_runner import BF16_KERNELS

    if decode == "kernel" and not BF16_KERNELS:
        pytest.skip("this CPU lacks AVX-512 BF16: the runner decodes bfloat16 with the graph only")
    exported = load_exported(tiny_exports[export])
    tokenizer = exported.tokenizer()
    same = 0
    with CppRunner(built["runner"], tiny_exports[export], threads=threads, decode=decode) as runner:
        for prompt in PROMPTS:
            ids = prompt_ids(tokenizer, prompt)[0].tolist()
            got, _ = runner.beams(ids, 4, NEW_TOKENS)
            expected = exported.beams_exported(ids, 4, NEW_TOKENS)
            if decode == "graph":
                assert [(c.tokens, c.score) for c in got] == [(c.tokens, c.score) for c in expected]
            same += [c.tokens for c in got] == [c.tokens for c in expected]
            assert len(got) == 4 and got[0].normalized >= got[-1].normalized
    print(f"\n{export} ({decode}, {threads} thread(s)): same 4 beams as Python on {same}/{len(PROMPTS)} prompts")
