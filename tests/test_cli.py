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
