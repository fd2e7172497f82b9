"""The stage contract through run_stage (plain calls, no Prefect server needed)."""

import pytest

from sqlcopilot_core import tracking
from tasks.stage import run_stage, store


def producer(calls, fail=False):
    def produce(staging, checkpoints, run_id):
        calls.append(run_id)
        (staging / "weights.bin").write_bytes(b"w" * 10)
        if fail:
            raise RuntimeError("training diverged")
        return {"train_steps": 3}
    return produce


def scorer(calls):
    def score(model_dir, out_dir):
        calls.append(str(model_dir))
        (out_dir / "summary.json").write_text("{}")
        return {"ex": 0.5, "params": 10}
    return score


def test_cache_hit_and_separate_score_cache(work_home):
    produced, scored = [], []
    first = run_stage("finetune", {"lr": 1}, {}, ("modeling",), producer(produced), score=scorer(scored),
                      eval_config={"limit": 5})
    assert first.metrics == {"train_steps": 3, "ex": 0.5, "params": 10} and len(produced) == 1 and len(scored) == 1
    again = run_stage("finetune", {"lr": 1}, {}, ("modeling",), producer(produced), score=scorer(scored),
                      eval_config={"limit": 5})
    assert again.key == first.key and len(produced) == 1 and len(scored) == 1
    assert tracking.run_metrics(again.manifest["mlflow_run_id"])["ex"] == 0.5
    # other scoring settings re-score the same model without producing it again
    run_stage("finetune", {"lr": 1}, {}, ("modeling",), producer(produced), score=scorer(scored),
              eval_config={"limit": 6})
    assert len(produced) == 1 and len(scored) == 2
    assert len([p for p in (store().root / "score").iterdir() if not p.name.startswith(".")]) == 2


def test_failed_stage_commits_nothing_and_marks_the_run_failed(work_home):
    calls = []
    with pytest.raises(RuntimeError, match="training diverged"):
        run_stage("prune", {"ratio": 0.5}, {}, ("prune",), producer(calls, fail=True))
    assert not [p for p in (store().root / "prune").iterdir()]  # staging removed, nothing committed
    run = tracking.client().get_run(calls[0])
    assert run.info.status == "FAILED" and "training diverged" in run.data.tags["error"]
