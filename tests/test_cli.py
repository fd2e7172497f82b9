"""The sqlcopilot command on the embedded sample data (evaluate, predict) and its errors."""

import json

from sqlcopilot_cli import main
from sqlcopilot_core.sample import ensure_sample_spider
from sqlcopilot_core.spider import load_split


def test_eval_gold_against_itself_and_a_bad_file(work_home, tmp_path, capsys):
    spider = ensure_sample_spider()
    dev = load_split(spider, "dev")
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("".join(json.dumps({"db_id": e.db_id, "question": e.question, "pred": e.query}) + "\n"
                                   for e in dev))
    assert main(["evaluate", "--spider-dir", str(spider), "--predictions", str(predictions), "--out",
                 str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ex"] == 1.0 and summary["n"] == len(dev) and {"by_db", "by_hardness", "errors"} <= set(summary)
    assert "execution accuracy" in capsys.readouterr().out.lower()
    predictions.write_text("SELECT 1\n")
    assert main(["evaluate", "--spider-dir", str(spider), "--predictions", str(predictions), "--out",
                 str(tmp_path / "out2")]) == 2
    assert str(predictions) in capsys.readouterr().err


def test_predict_writes_what_eval_reads(work_home, tmp_path):
    from sqlcopilot_core.modeling import save_model, tiny_model_and_tokenizer

    model_dir = save_model(*tiny_model_and_tokenizer(), tmp_path / "model")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--model", str(model_dir), "--out", str(out), "--limit", "3",
                 "--max-new-tokens", "4"]) == 0
    assert [json.loads(line)["db_id"] for line in out.read_text().splitlines()] == [
        e.db_id for e in load_split(ensure_sample_spider(), "dev")[:3]]


def test_predict_with_guided_constrained_decoding(work_home, tmp_path, capsys):
    from sqlcopilot_core.modeling import save_model, tiny_model_and_tokenizer

    model_dir = save_model(*tiny_model_and_tokenizer(), tmp_path / "model")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--model", str(model_dir), "--out", str(out), "--limit", "2", "--max-new-tokens", "4",
                 "--decoding", "guided", "--num-beams", "2", "--constrained"]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert main(["predict", "--model", str(model_dir), "--out", str(out), "--decoding", "beam",
                 "--num-beams", "0"]) == 2
    assert "num_beams" in capsys.readouterr().err


def test_predict_uses_the_models_prompt_and_warns_about_an_override(work_home, tmp_path, recwarn):
    from sqlcopilot_core.modeling import save_model, tiny_model_and_tokenizer
    from sqlcopilot_core.prompting import PromptSettings, write_prompt_settings

    model_dir = save_model(*tiny_model_and_tokenizer(), tmp_path / "model")
    write_prompt_settings(model_dir, PromptSettings(max_schema_tokens=300, value_hints=2))
    args = ["predict", "--model", str(model_dir), "--out", str(tmp_path / "p.jsonl"), "--limit", "1",
            "--max-new-tokens", "2"]
    assert main(args) == 0
    assert not [w for w in recwarn if "prompt settings differ" in str(w.message)]
    assert main(args + ["--max-schema-tokens", "200", "--prompt-form", "create_table"]) == 0
    [warning] = [w for w in recwarn if "prompt settings differ" in str(w.message)]
    assert "form 'compact' (model) -> 'create_table' (given)" in str(warning.message)
    assert "max_schema_tokens 300 (model) -> 200 (given)" in str(warning.message)


def test_schema_stats_prints_recall_and_prompt_sizes(work_home, capsys):
    spider = ensure_sample_spider()
    assert main(["schema-stats", "--spider-dir", str(spider), "--split", "train"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == {"n", "gold_table_recall", "gold_column_recall", "prompt_tokens", "truncated_share"}
    assert stats["n"] == len(load_split(spider, "train")) and stats["gold_table_recall"] == 1.0
    assert main(["schema-stats", "--spider-dir", str(spider), "--split", "train", "--max-schema-tokens", "40"]) == 0
    tight = json.loads(capsys.readouterr().out)
    assert tight["truncated_share"] > 0 and tight["prompt_tokens"]["max"] < stats["prompt_tokens"]["max"]


# ---- bad input never ends in a traceback, never scores silently ----

def gold_lines(examples, pred=None) -> list[str]:
    return [json.dumps({"db_id": e.db_id, "question": e.question, "pred": e.query if pred is None else pred})
            for e in examples]


def run_eval(spider, predictions, out, capsys) -> tuple[int, str]:
    code = main(["evaluate", "--spider-dir", str(spider), "--predictions", str(predictions), "--out", str(out)])
    return code, capsys.readouterr().err


def test_eval_reads_a_byte_order_mark(work_home, tmp_path, capsys):
    spider = ensure_sample_spider()
    dev = load_split(spider, "dev")
    for name, text in (("preds.jsonl", "\n".join(gold_lines(dev))), ("preds.sql", "\n".join(e.query for e in dev))):
        predictions = tmp_path / name
        predictions.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert run_eval(spider, predictions, tmp_path / name.replace(".", "_"), capsys)[0] == 0
        assert json.loads((tmp_path / name.replace(".", "_") / "summary.json").read_text())["ex"] == 1.0


def test_eval_names_the_file_and_line_of_unreadable_input(work_home, tmp_path, capsys):
    spider = ensure_sample_spider()
    dev = load_split(spider, "dev")
    invalid = tmp_path / "latin1.jsonl"
    invalid.write_bytes("\n".join(gold_lines(dev[:3]) + ['{"pred": "SELECT \xe9"}']).encode("latin-1"))
    code, err = run_eval(spider, invalid, tmp_path / "out1", capsys)
    assert code == 2 and f"{invalid} line 4: not UTF-8" in err and "Traceback" not in err
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    code, err = run_eval(spider, binary, tmp_path / "out2", capsys)
    assert code == 2 and f"{binary}: a binary file" in err
    code, err = run_eval(spider, tmp_path, tmp_path / "out3", capsys)
    assert code == 2 and f"{tmp_path}: is a folder" in err


def test_eval_checks_the_output_folder_before_scoring(work_home, tmp_path, capsys):
    spider = ensure_sample_spider()
    existing = tmp_path / "summary.txt"
    existing.write_text("keep me")
    not_even_predictions = tmp_path / "nowhere.jsonl"
    code, err = run_eval(spider, not_even_predictions, existing, capsys)
    assert code == 2 and f"{existing} is an existing file" in err and existing.read_text() == "keep me"
    code, err = run_eval(spider, not_even_predictions, existing / "below", capsys)
    assert code == 2 and f"{existing} is an existing file" in err


def test_eval_writes_every_record_of_a_prediction_with_a_lone_surrogate(work_home, tmp_path, capsys):
    spider = ensure_sample_spider()
    dev = load_split(spider, "dev")
    lines = gold_lines(dev)
    lines[0] = json.dumps({"db_id": dev[0].db_id, "question": dev[0].question, "pred": "SELECT '\ud800'"})
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("\n".join(lines))
    assert run_eval(spider, predictions, tmp_path / "out", capsys)[0] == 0
    scored = (tmp_path / "out" / "predictions_scored.jsonl").read_text().splitlines()
    assert len(scored) == len(dev) and json.loads(scored[0])["pred"] == "SELECT '\ud800'"


def test_eval_counts_single_call_bombs_as_errors_and_stays_small(work_home, tmp_path):
    """`sqlcopilot eval --timeout 1` on predictions that are single-call bombs: each stops within the limit plus a
    second, is counted as a timeout or limit error, and the scoring process never holds 1 GB."""
    import subprocess
    import sys
    import time

    spider = ensure_sample_spider()
    dev = load_split(spider, "dev")
    printf = "printf('%.*c', 2000000000, 'x')"
    bombs = [f"SELECT {printf}", f"SELECT {printf}, {printf}, {printf}",
             "SELECT replace(replace(hex(zeroblob(4000000)), '0', '0000000000'), '0', '0000000000')",
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 10000) SELECT zeroblob(9e6) FROM n"]
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("\n".join([json.dumps({"pred": bomb}) for bomb in bombs]
                                     + gold_lines(dev[len(bombs):])))
    # VmHWM: this process's own peak (ru_maxrss would carry over the high-water mark of the process that forked it)
    measure = ("import re, sys\nfrom sqlcopilot_cli import main\ncode = main(sys.argv[1:])\n"
               "peak = re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)\n"
               "print('maxrss_kb', peak, code)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", measure, "evaluate", "--spider-dir", str(spider), "--predictions",
                           str(predictions), "--out", str(tmp_path / "out"), "--timeout", "1"],
                          capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    maxrss_kb, code = done.stdout.split("maxrss_kb")[-1].split()
    assert code == "0", done.stderr[-3000:]
    assert int(maxrss_kb) < 1 << 20
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["errors"]["timeout"] + summary["errors"]["limit"] == len(bombs)
    assert summary["correct"] == len(dev) - len(bombs)
    assert elapsed < 60 + len(bombs) * 2  # start-up and the gold queries, then at most limit + 1 s per bomb
