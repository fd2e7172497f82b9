"""prune_sweep on the smoke profile: one child run per ratio sharing the cached teacher, a comparison table."""

from sqlcopilot_core import tracking


def test_sweep_creates_one_child_run_per_ratio(work_home, prefect_harness):
    from flows.sweep import prune_sweep

    result = prune_sweep(profile="smoke", ratios=[0.75, 0.5])
    client = tracking.client()
    experiment = tracking.experiment_id()
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'")
    by_name = {r.data.tags["mlflow.runName"]: r for r in children}
    assert {"download_base", "finetune", "ratio=0.75", "ratio=0.5"} == set(by_name)
    for ratio in (0.75, 0.5):
        child = by_name[f"ratio={ratio}"]
        assert {"ex", "params", "size_mb", "tokens_per_s", "pruned_ex", "pruned_achieved_ratio"} <= set(
            child.data.metrics)
        assert abs(child.data.metrics["pruned_achieved_ratio"] - ratio) <= 0.02
        stages = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{child.info.run_id}'")
        assert sorted(r.data.tags["stage"] for r in stages) == ["distill", "prune"]
    assert [row["ratio"] for row in result["rows"]] == [0.75, 0.5]
    assert result["rows"][0]["params"] > result["rows"][1]["params"]
    files = {f.path for f in client.list_artifacts(result["mlflow_run_id"], "sweep")}
    assert files == {"sweep/sweep.md", "sweep/sweep.json", "sweep/sweep.png"}

    # a second sweep with one more ratio reuses the teacher and both earlier ratios
    again = prune_sweep(profile="smoke", ratios=[0.75, 0.5, 0.3])
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{again['mlflow_run_id']}'")
    assert {r.data.tags["mlflow.runName"]: r.data.tags.get("cache_hit") for r in runs
            if "stage" in r.data.tags} == {"download_base": "true", "finetune": "true"}

    # an existing teacher given by path: no download_base/finetune runs, the 0.75 student is a cache hit
    given = prune_sweep(profile="smoke", ratios=[0.75], teacher=result["teacher"])
    assert given["rows"] == result["rows"][:1]
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{given['mlflow_run_id']}'")
    assert {r.data.tags["mlflow.runName"] for r in runs} == {"ratio=0.75"}


def test_sweep_refuses_a_teacher_that_is_not_a_finetune_artifact(work_home, prefect_harness):
    import pytest

    from flows.sweep import prune_sweep
    from sqlcopilot_core.artifacts import ArtifactError
    from tasks.download_base import download_base

    base = download_base.fn({"source": "tiny"}, {})
    with pytest.raises(ArtifactError, match="stage 'download_base'"):
        prune_sweep(profile="smoke", ratios=[0.5], teacher=str(base.path))
    with pytest.raises(ArtifactError, match="does not exist"):
        prune_sweep(profile="smoke", ratios=[0.5], teacher=str(work_home / "nowhere"))
