"""The C++ schema constraint (cpp/src/constraint.cpp) against Python's (sqlcopilot_core/sqlconstraint.py): the same
token sequences fed to both must be rejected at the same token, or accepted with the same last state.

    .venv/bin/python -m pytest -q -s tests/cpp/test_constraint_parity.py
    .venv/bin/python -m tests.cpp.test_constraint_parity [--tokenizer work/smollm2_base] [--preds preds.jsonl]
        [--split train] [--bench 3]    # a manual check: another tokenizer, model predictions, the train golds, timing

Sequences: every gold query of the Spider dev split (as training writes it: target_ids), each with one column name
replaced by a made-up word, the table after its first FROM replaced, a ')' appended, or a quote left open (all four
must be rejected), seeded random edits of it (the table after its first FROM replaced by another table of the
database, for the scope check where the statement ends; a character deleted, inserted or replaced; a token replaced
by any id of the vocabulary, four inserted, a special one inserted: either verdict, as long as both agree); plus texts
mixing SQL with non-ASCII characters (whole, for accepts, and as tokens), where the classes of str.isalnum, isspace,
isdigit, lower and re's \\d decide.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sqlcopilot_core import paths
from sqlcopilot_core.build import build_runner
from sqlcopilot_core.packing import target_ids
from sqlcopilot_core.sqlconstraint import KEYWORDS, SchemaConstraint, constraint_spec

CPP_DIR = Path(__file__).resolve().parents[2] / "cpp"
CHECK_NAME = "sqlcopilot-constraint-check"
MADE_UP = "zqxv_made_up"
UNICODE = ["é", "É", "ß", "Σ", "ς", "İ", "ǅ", "²", "½", "١", "１", "Ⅻ", "\u00a0", "\u2028", "\x1c", "\x85", "\ufffd",
           "中", "ー", "😀", "\u0301", "_", "ﬁ", "K"]  # K: Kelvin sign, lowercases to ASCII k
SQL_BITS = ["SELECT ", "FROM ", "WHERE ", " AS ", "T1", ".", ",", "(", ")", "'", '"', "`", "[", "]", " ", "\n", "-",
            ";", "*", "=", "1", "2.5", "count", "name", "id", "JOIN ", " ON ", "t", "x"]

pytestmark = pytest.mark.slow


def vocab_line(constraint: SchemaConstraint) -> str:
    """The vocabulary as Python's constraint holds it (for_database decides the stop and banned ids)."""
    return json.dumps({"vocab": {"token_texts": constraint.token_texts, "eos_id": constraint.eos_id,
                                 "stop_ids": sorted(constraint.stop_ids), "banned_ids": sorted(constraint.banned)}})


def python_walk(constraint: SchemaConstraint, tokens: list[int]) -> dict:
    """What sqlcopilot-constraint-check prints for one token sequence."""
    state, rejected = constraint.start(), -1
    for at, token in enumerate(tokens):
        following = constraint.advance(state, token)
        if following is None:
            rejected = at
            break
        state = following
    return {"rejected_at": rejected, "mode": state.mode, "depth": state.depth, "words": state.words,
            "ended": state.ended}


def _outside_strings(query: str) -> list[bool]:
    """Per character: whether it lies outside a quoted string (the constraint's lexing of quotes)."""
    closing, inside, out = {"'": "'", '"': '"', "`": "`", "[": "]"}, None, []
    for char in query:
        if inside is None:
            out.append(char not in closing)
            inside = closing.get(char)
        else:
            out.append(False)
            if char == inside:
                inside = None
    return out


def mutations(query: str, tables: dict[str, list[str]], rng: random.Random) -> tuple[list[str], list[str]]:
    """(mutants that must be rejected, random edits that either may be) of one gold query."""
    query = " ".join(query.split()).rstrip(";").rstrip()  # what follows a ';' is not checked: the statement ended
    outside = _outside_strings(query)
    columns = {c.lower() for cols in tables.values() for c in cols}
    must = []
    for match in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", query):
        before = query[:match.start()].rstrip().lower()
        if (outside[match.start()] and match.group().lower() in columns and not before.endswith(" as")
                and not re.search(r"\b(from|join)$", before) and not query[match.end():].startswith(".")):
            must.append(query[:match.start()] + MADE_UP + query[match.end():])
            break
    table = re.search(r"\bFROM\s+([A-Za-z_]\w*)", query, re.IGNORECASE)
    if table and outside[table.start(1)]:
        must.append(query[:table.start(1)] + MADE_UP + query[table.end(1):])
    must += [query + ")", query + " WHERE 'open"]
    edits = []
    if table and outside[table.start(1)] and len(tables) > 1:  # another table of the database: the scope check
        other = rng.choice(sorted(t for t in tables if t.lower() != table.group(1).lower()))
        edits.append(query[:table.start(1)] + other + query[table.end(1):])
    for _ in range(3):
        at = rng.randrange(len(query))
        kind = rng.randrange(3)
        char = rng.choice(".,()'\"`[]*= _x1" + "".join(UNICODE))
        edits.append(query[:at] + query[at + 1:] if kind == 0 else query[:at] + char + query[at + (kind == 2):])
    return must, edits


def token_edits(ids: list[int], constraint: SchemaConstraint, rng: random.Random) -> list[list[int]]:
    """A gold token sequence with one token replaced by any id, with four ids inserted, and with a banned (special)
    id inserted: every kind of token text of the vocabulary, in every state."""
    vocab = len(constraint.token_texts)
    at = rng.randrange(len(ids))
    edits = [ids[:at] + [rng.randrange(vocab)] + ids[at + 1:],
             ids[:at] + [rng.randrange(vocab) for _ in range(4)] + ids[at:]]
    if constraint.banned:
        edits.append(ids[:at] + [rng.choice(sorted(constraint.banned))] + ids[at:])
    return edits


def unicode_texts(rng: random.Random, count: int) -> list[str]:
    """Texts mixing SQL pieces, names and non-ASCII characters (for accepts)."""
    pieces = SQL_BITS + UNICODE
    return [("SELECT " if rng.random() < 0.7 else "") + "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
            for _ in range(count)]


def build_requests(spider_dir: Path, tokenizer, preds: Path | None = None,
                   split: str = "dev") -> list[tuple[str, str, dict]]:
    """(kind, input line for the C++ program, the reply Python gives) for every check; the first is the vocabulary."""
    from sqlcopilot_core.spider import load_split

    rng = random.Random(0)
    constraints: dict[str, SchemaConstraint] = {}
    specs: dict[str, dict] = {}
    requests: list[tuple[str, str, dict]] = []
    examples = load_split(spider_dir, split)

    def tokens(key: str, ids: list[int], kind: str) -> None:
        requests.append((kind, json.dumps({"spec": specs[key], "tokens": ids}), python_walk(constraints[key], ids)))

    def text(key: str, sql: str) -> None:
        requests.append(("text", json.dumps({"spec": specs[key], "text": sql}),
                         {"accepts": constraints[key].accepts(sql)}))

    for example in examples:
        key = str(example.db_path)
        if key not in constraints:
            constraints[key] = SchemaConstraint.for_database(example.db_path, tokenizer)
            specs[key] = constraint_spec(example.db_path)
            if not requests:
                requests.append(("vocab", vocab_line(constraints[key]),
                                 {"tokens": len(constraints[key].token_texts)}))
        gold = target_ids(tokenizer, example.query)
        tokens(key, gold, "gold")
        for ids in token_edits(gold, constraints[key], rng):
            tokens(key, ids, "token_edit")
        must, edits = mutations(example.query, specs[key]["tables"], rng)
        for sql in must:
            tokens(key, target_ids(tokenizer, sql), "must_reject")
        for sql in edits:
            tokens(key, target_ids(tokenizer, sql), "edit")
        for sql in [example.query] + must + edits:
            text(key, sql)
    first = str(examples[0].db_path)
    for sql in unicode_texts(rng, 3000):
        text(first, sql)
        # as tokens too, whitespace kept: newlines, blank lines and ';' inside tokens (stop ids)
        tokens(first, tokenizer(sql, add_special_tokens=False).input_ids + [tokenizer.eos_token_id], "text_tokens")
    if preds is not None:
        db_path = {e.db_id: str(e.db_path) for e in examples}
        for line in preds.read_text().splitlines():
            record = json.loads(line)
            key = db_path.get(record.get("db_id"))
            if key is not None:
                ids = tokenizer(record["pred"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
                tokens(key, ids, "pred")
    return requests


def summary(requests: list[tuple[str, str, dict]], got: list[dict]) -> dict:
    """Counts by kind, Python's verdicts on the golds and mutants, and the C++ replies that differ from Python's."""
    assert len(got) == len(requests), (len(got), len(requests))
    kinds: dict[str, int] = {}
    for kind, _, _ in requests:
        kinds[kind] = kinds.get(kind, 0) + 1
    mismatches = [{"kind": kind, "request": json.loads(line), "python": want, "cpp": have}
                  for (kind, line, want), have in zip(requests, got) if want != have]
    return {"requests": kinds,
            "gold_rejected_by_python": sum(1 for k, _, w in requests if k == "gold"
                                           and not (w["rejected_at"] == -1 and w["ended"])),
            "must_reject_accepted_by_python": sum(1 for k, _, w in requests if k == "must_reject"
                                                  and w["rejected_at"] == -1),
            "pred_rejected": sum(1 for k, _, w in requests if k == "pred" and w["rejected_at"] != -1),
            "mismatches": len(mismatches), "examples": mismatches[:5]}


def run_check(program: str | Path, lines: list[str], bench: int = 0, cache: int = 0) -> tuple[list[dict], str]:
    command = [str(program)] + (["--bench", str(bench)] if bench else []) + (["--cache", str(cache)] if cache else [])
    done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


@pytest.fixture(scope="module")
def check_program() -> Path:
    """cpp/ built (ctest run: the constraint's hand cases included) in a kept folder, so only changes recompile."""
    info = build_runner(CPP_DIR, paths.build_dir() / "cpp-constraint", run_tests=True)
    assert "100% tests passed" in Path(info["log"]).read_text()
    return Path(info["build_dir"]) / CHECK_NAME


@pytest.fixture(scope="module")
def dev_requests(shared_spider) -> list[tuple[str, str, dict]]:
    from sqlcopilot_core.modeling import tiny_tokenizer

    # the byte tokenizer cuts every name at every character: the strictest prefix check
    return build_requests(shared_spider, tiny_tokenizer())


def test_keywords_are_python_s(check_program):
    got, _ = run_check(check_program, ['{"keywords": true}'])
    assert got == [{"keywords": sorted(KEYWORDS)}]


def test_cpp_constraint_rejects_the_same_tokens_as_python_on_spider_dev(check_program, dev_requests):
    requests = dev_requests
    lines = [line for _, line, _ in requests]
    for cache in (0, 5000):  # advance() computed, and through a cache that fills and clears
        result = summary(requests, run_check(check_program, lines, cache=cache)[0])
        print(f"\nC++ (cache {cache}) vs Python schema constraint: {json.dumps(result, ensure_ascii=False)}")
        assert result["requests"]["gold"] >= 500 and result["gold_rejected_by_python"] == 0
        assert result["must_reject_accepted_by_python"] == 0
        assert result["mismatches"] == 0


def test_cpp_reads_the_vocabulary_an_export_writes(check_program, dev_requests, tmp_path):
    """token_texts.json and the manifest's eos and special ids give the C++ side the vocabulary Python's
    for_database builds (stop ids: computed from the texts in C++ as statement_end_ids does)."""
    from sqlcopilot_core.export import ExportConfig, export_model
    from sqlcopilot_core.generate import statement_end_ids
    from sqlcopilot_core.modeling import tiny_tokenizer
    from tests.core.test_export import PROMPTS, make_model_folder

    export_dir = tmp_path / "export"
    export_model(make_model_folder(tmp_path / "model"), export_dir, ExportConfig(max_seq_len=96, parity_prompts=1,
                                                                                  parity_new_tokens=4), PROMPTS)
    lines = [json.dumps({"export": str(export_dir)})] + [line for _, line, _ in dev_requests[1:]]
    result = summary(dev_requests, run_check(check_program, lines)[0])
    assert result["mismatches"] == 0, result["examples"]
    # a manifest that lists the stop ids itself ("stop_token_ids", generate.statement_end_ids): the same vocabulary
    manifest = json.loads((export_dir / "manifest.json").read_text())
    (export_dir / "manifest.json").write_text(json.dumps({**manifest, "stop_token_ids": sorted(
        statement_end_ids(tiny_tokenizer()))}))
    result = summary(dev_requests, run_check(check_program, lines)[0])
    assert result["mismatches"] == 0, result["examples"]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spider", default=str(Path(__file__).resolve().parents[3] / "shared" / "spider"))
    parser.add_argument("--split", default="dev", help="the Spider split whose gold queries are checked")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: the tiny byte tokenizer)")
    parser.add_argument("--preds", default=None, help="JSON lines with db_id and pred (model predictions)")
    parser.add_argument("--program", default=None, help="sqlcopilot-constraint-check (default: build cpp/)")
    parser.add_argument("--bench", type=int, default=0, help="also time advance() (best of N rounds)")
    args = parser.parse_args()
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from sqlcopilot_core.modeling import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    program = args.program or Path(build_runner(CPP_DIR, paths.build_dir() / "cpp-constraint")["build_dir"])
    program = Path(program) / CHECK_NAME if Path(program).is_dir() else program
    requests = build_requests(Path(args.spider), tokenizer, Path(args.preds) if args.preds else None, args.split)
    got, timing = run_check(program, [line for _, line, _ in requests], args.bench)
    result = summary(requests, got)
    print(json.dumps({"tokenizer": args.tokenizer or "tiny byte tokenizer", "split": args.split, **result}, indent=1,
                     ensure_ascii=False))
    if timing:
        print(timing, file=sys.stderr)
    sys.exit(1 if result["mismatches"] else 0)


if __name__ == "__main__":
    _main()
