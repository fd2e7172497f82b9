"""`sqlcopilot ask`: a question about a database the model has never seen, tokenized in Python, generated in C++."""

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.core.test_export import flip_one_bit

from sqlcopilot_core import paths
from sqlcopilot_core.build import build_runner, source_hash
from sqlcopilot_cli import main
from sqlcopilot_core.cpp_runtime import CppRunner, RunnerError
from sqlcopilot_core.export import ExportConfig, export_model
from sqlcopilot_core.modeling import save_model, tiny_model_and_tokenizer
from sqlcopilot_core.sample import ensure_sample_spider

CPP_DIR = Path(__file__).resolve().parents[2] / "cpp"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("copilot")
    model_dir = save_model(*tiny_model_and_tokenizer(seed=3), root / "model")
    export_model(model_dir, root / "export", ExportConfig(max_seq_len=1024, parity_prompts=1, parity_new_tokens=4),
                 ["-- SQLite database schema\nCREATE TABLE t (a int);\n-- Question: how many?\n"])
    info = build_runner(CPP_DIR, paths.build_dir() / f"cpp-{source_hash(CPP_DIR)[:16]}-release", "Release")
    return root / "export", Path(info["runner"])


def make_shop(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL, month TEXT);"
                           "INSERT INTO orders VALUES (1, 9.5, '2026-10'), (2, 12.0, '2026-11');")
    return path


def test_ask_prints_sql_and_leaves_the_database_unchanged(runtime, tmp_path, capsys):
    export_dir, runner = runtime
    db = make_shop(tmp_path / "shop.sqlite")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert main(["ask", "--model", str(export_dir), "--runner", str(runner), "--db", str(db), "--execute",
                 "--json", "--max-new-tokens", "12", "how many orders last month?"]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert answer["question"] == "how many orders last month?" and isinstance(answer["sql"], str)
    assert answer["new_tokens"] >= 1 and answer["prefill_ms"] > 0
    assert "error_kind" in answer  # the random tiny model's SQL was executed (or refused) read-only
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_ask_batch_mode_and_bad_inputs(runtime, tmp_path, capsys):
    export_dir, runner = runtime
    db = make_shop(tmp_path / "shop.sqlite")
    batch = tmp_path / "questions.json"
    batch.write_text(json.dumps([{"db": str(db), "question": "total amount?"}, {"db": str(db), "question": "ids?"}]))
    assert main(["ask", "--model", str(export_dir), "--runner", str(runner), "--batch", str(batch),
                 "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.count("-- total amount?  (") == out.count("-- ids?  (") == 1  # one answer per question
    assert main(["ask", "--model", str(export_dir), "--runner", str(runner), "--db", str(tmp_path / "no.sqlite"),
                 "q"]) == 2
    assert "no.sqlite does not exist" in capsys.readouterr().err
    manifest = json.loads((export_dir / "manifest.json").read_text())
    (export_dir / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    try:
        assert main(["ask", "--model", str(export_dir), "--runner", str(runner), "--db", str(db), "q"]) == 2
        assert "re-run the export stage" in capsys.readouterr().err
    finally:
        (export_dir / "manifest.json").write_text(json.dumps(manifest))


def test_a_bit_flipped_graph_is_refused_by_the_runner_ask_and_predict(runtime, tmp_path, capsys):
    export_dir, runner = runtime
    flipped = Path(shutil.copytree(export_dir, tmp_path / "flipped"))
    flip_one_bit(flipped / "decoder.pt")
    named = f"{flipped / 'decoder.pt'}: checksum differs from the manifest"
    with pytest.raises(RunnerError, match="code 2.*" + named):
        with CppRunner(runner, flipped) as cpp:
            cpp.generate([[1, 2, 3]], 2)
    db = make_shop(tmp_path / "shop.sqlite")
    assert main(["ask", "--model", str(flipped), "--runner", str(runner), "--db", str(db), "how many?"]) == 2
    assert named in capsys.readouterr().err
    spider = ensure_sample_spider()
    assert main(["predict", "--model", str(flipped), "--runtime", "cpp", "--runner", str(runner), "--spider-dir",
                 str(spider), "--out", str(tmp_path / "preds.jsonl"), "--limit", "1"]) == 2
    assert named in capsys.readouterr().err and not (tmp_path / "preds.jsonl").exists()
    with CppRunner(runner, export_dir) as cpp:  # the original still loads
        assert len(cpp.generate([[1, 2, 3]], 2)[0][0]) >= 1


def test_a_question_nothing_ran_for_is_decoded_again_with_more_beams(runtime, tmp_path):
    """Through the C++ runner, batched (prefix reuse) and one by one: a guided question whose single beam does not
    run is decoded again with retry_beams beams and answered as a 3-beam search would answer it."""
    from transformers import AutoTokenizer

    from sqlcopilot_core.copilot import Decoding, Runtime, decode_prompts
    from sqlcopilot_core.prompting import Prompter, PromptSettings

    export_dir, runner = runtime
    db = make_shop(tmp_path / "shop.sqlite")
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    prompter = Prompter(PromptSettings(value_hints=0), tokenizer)
    prompts = [(*prompter.split_ids(db, q), db) for q in ("total amount?", "ids?", "how many orders?")]
    rt = Runtime(export_dir, runner)
    for reuse in (True, False):
        def run(num_beams: int, retry_beams: int):
            return decode_prompts(rt, tokenizer, prompts, Decoding("guided", num_beams, max_new_tokens=8,
                                                                   prefix_reuse=reuse, retry_beams=retry_beams),
                                  progress=False)
        once, retried, wide = run(1, 0), run(1, 3), run(3, 0)
        assert any(a["error"] for a in once)
        for first, again, three in zip(once, retried, wide):
            if first["error"] is None:
                assert "retried" not in again
            else:
                assert again["retried"]["num_beams"] == 3 and again["retried"]["first_error"] == first["error"]
                assert again["candidate_sqls"] == three["candidate_sqls"] and again["sql"] == three["sql"]
