"""The stage contract through run_stage and run (plain calls, no Prefect): cache hits, the separate evaluate cache,
failures, and keys made of content (data, databases, code)."""

import json
import shutil
import sqlite3

import pytest

from sqlcopilot_core import stage, tracking
from sqlcopilot_core.stage import Scorer, run_stage, store
from sqlcopilot_core.sample import build_sample_spider
from sqlcopilot_core.spider import load_split
from sqlcopilot_core.stages import download_base as download_base_stage, finetune as finetune_stage

CODE = ("sqlcopilot_core.modeling",)


def producer(calls, fail=False):
    def produce(staging, checkpoints, run):
        calls.append(run.run_id)
        (staging / "weights.bin").write_bytes(b"w" * 10)
        if fail:
            raise RuntimeError("training diverged")
        return {"train_steps": 3}
    return produce


def scorer(calls, settings, data=None):
    def score(model_dir, out_dir):
        calls.append(str(model_dir))
        (out_dir / "summary.json").write_text("{}")
        return {"ex": 0.5, "params": 10}
    return Scorer(settings, data or {}, score)


def committed(name):
    return [p for p in (store().root / name).iterdir() if not p.name.startswith(".")]


def test_cache_hit_and_separate_evaluate_cache(work_home):
    produced, scored = [], []
    first = run_stage("finetune", {"lr": 1}, {}, producer(produced), code=CODE, scorer=scorer(scored, {"limit": 5}))
    assert first.metrics == {"train_steps": 3, "ex": 0.5, "params": 10} and len(produced) == 1 and len(scored) == 1
    again = run_stage("finetune", {"lr": 1}, {}, producer(produced), code=CODE, scorer=scorer(scored, {"limit": 5}))
    assert again.key == first.key and len(produced) == 1 and len(scored) == 1
    run = tracking.client().get_run(again.manifest["mlflow_run_id"])
    assert run.data.metrics["ex"] == 0.5
    # other scoring settings re-score the same model without producing it again
    run_stage("finetune", {"lr": 1}, {}, producer(produced), code=CODE, scorer=scorer(scored, {"limit": 6}))
    assert len(produced) == 1 and len(scored) == 2 and len(committed("evaluate")) == 2


def test_a_hit_names_the_parts_that_matched_and_a_miss_those_that_changed(work_home):
    calls = []
    run_stage("prune", {"ratio": 0.5}, {}, producer(calls), code=CODE, data={"train": "aaaa"})
    parent = tracking.start_run("flow")
    hit = run_stage("prune", {"ratio": 0.5}, {}, producer(calls), code=CODE, data={"train": "aaaa"},
                    parent_run_id=parent)
    run_stage("prune", {"ratio": 0.5}, {}, producer(calls), code=CODE, data={"train": "bbbb"}, parent_run_id=parent)
    runs = tracking.client().search_runs([tracking.experiment_id()], f"tags.mlflow.parentRunId = '{parent}'",
                                         order_by=["attributes.start_time ASC"])
    tags = [r.data.tags for r in runs]
    assert tags[0]["cache_hit"] == "true" and tags[0]["cache_matched"] == "config, data.train, code, libraries"
    assert tags[0]["key.data.train"] == "aaaa" and "torch==" in tags[0]["key.libraries"]
    assert tags[1]["cache_hit"] == "false" and tags[1]["cache_changed"] == "data.train"
    assert "lookup_s" in runs[0].data.metrics and len(calls) == 2
    assert hit.manifest["identity"]["parts"]["data.train"] == "aaaa"


def test_failed_stage_commits_nothing_and_marks_the_run_failed(work_home):
    calls = []
    with pytest.raises(RuntimeError, match="training diverged"):
        run_stage("prune", {"ratio": 0.5}, {}, producer(calls, fail=True), code=CODE)
    assert not list((store().root / "prune").iterdir())  # staging removed, nothing committed
    run = tracking.client().get_run(calls[0])
    assert run.info.status == "FAILED" and "training diverged" in run.data.tags["error"]


def test_a_changed_gold_query_changes_the_finetune_key_and_a_changed_database_the_score_key(work_home, tmp_path):
    spider = build_sample_spider(tmp_path / "spider")
    config = finetune_stage.CONFIG()
    evaluate = {"spider_dir": str(spider), "limit": 3}

    def keys():
        data = finetune_stage.reads(config, spider, None)
        tuned = stage.identify("finetune", {}, {"download_base": "b"}, ("sqlcopilot_core.stages.finetune",), data)
        scorer_ = stage.scorer_for("python", evaluate, {})
        return tuned.key, stage.score_identity_of("finetune", "k", scorer_).key

    finetune_key, score_key = keys()
    assert keys() == (finetune_key, score_key)
    # a copy of the folder elsewhere is the same data: nothing is keyed by path
    moved = shutil.copytree(spider, tmp_path / "elsewhere")
    assert stage.identify("finetune", {}, {}, CODE, finetune_stage.reads(config, moved, None)).key == \
        stage.identify("finetune", {}, {}, CODE, finetune_stage.reads(config, spider, None)).key

    train = json.loads((spider / "train_spider.json").read_text())
    train[5]["query"] = train[5]["query"].rstrip(";") + " LIMIT 1000"
    (spider / "train_spider.json").write_text(json.dumps(train))
    edited_key, same_score_key = keys()
    assert edited_key != finetune_key and same_score_key == score_key

    dev_db = load_split(spider, "dev")[0].db_path
    with sqlite3.connect(dev_db) as conn:  # touch a dev database's contents: re-score, do not retrain
        table = conn.execute("SELECT name FROM sqlite_master WHERE type='table' LIMIT 1").fetchone()[0]
        conn.execute(f'DELETE FROM "{table}" WHERE rowid = (SELECT max(rowid) FROM "{table}")')
    assert keys() == (edited_key, keys()[1]) and keys()[1] != score_key


def test_touching_a_dev_database_rescores_a_cached_model(work_home, tmp_path):
    spider = build_sample_spider(tmp_path / "spider")
    evaluate = {"spider_dir": str(spider), "limit": 2, "max_new_tokens": 4, "speed_tokens": 2}
    first = stage.run(download_base_stage, {"source": "tiny"}, {}, None, evaluate)
    second = stage.run(download_base_stage, {"source": "tiny"}, {}, None, evaluate)
    assert second.key == first.key and len(committed("evaluate")) == 1
    db = load_split(spider, "dev")[0].db_path
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE touched (x INTEGER)")
    third = stage.run(download_base_stage, {"source": "tiny"}, {}, None, evaluate)
    assert third.key == first.key and len(committed("download_base")) == 1 and len(committed("evaluate")) == 2
    assert {"ex", "params", "size_mb", "tokens_per_s"} <= set(third.metrics)
