"""prune_sweep on the smoke profile: one child run per ratio sharing the cached teacher, a control, and the comparison
on the parent run (description, metrics charted against parameters kept, Pareto plot)."""

from sqlcopilot_core import tracking


def test_sweep_creates_one_child_run_per_ratio(work_home, prefect_harness):
    from flows.sweep import prune_sweep

    result = prune_sweep(profile="smoke", ratios=[0.75, 0.5, 0.12])
    client = tracking.client()
    experiment = tracking.experiment_id()
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'")
    by_name = {r.data.tags["mlflow.runName"]: r for r in children}
    assert {"download_base", "finetune", "ratio=0.75", "ratio=0.5", "ratio=0.12", "control"} == set(by_name)
    for ratio in (0.75, 0.5, 0.12):
        child = by_name[f"ratio={ratio}"]
        assert {"ex", "params", "size_mb", "tokens_per_s", "pruned_ex", "pruned_achieved_ratio"} <= set(
            child.data.metrics)
        assert abs(child.data.metrics["pruned_achieved_ratio"] - ratio) <= 0.02
        stages = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{child.info.run_id}'")
        assert sorted(r.data.tags["stage"] for r in stages) == ["distill", "prune"]
    # the smoke profile allocates by sensitivity: measured once per way of measuring (0.12 adds the hidden width)
    prune_runs = {}
    for ratio in (0.75, 0.5, 0.12):
        child_id = by_name[f"ratio={ratio}"].info.run_id
        prune_runs[ratio], = client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{child_id}' and tags.stage = 'prune'")
    assert {ratio: run.data.tags["sensitivity"].split()[0] for ratio, run in prune_runs.items()} == {
        0.75: "measured,", 0.5: "reused", 0.12: "measured,"}
    assert [row["ratio"] for row in result["rows"]] == [0.75, 0.5, 0.12]
    assert [row["prune_hidden"] for row in result["rows"]] == [False, False, True]
    assert result["rows"][0]["params"] > result["rows"][1]["params"] > result["rows"][2]["params"]
    files = {f.path for f in client.list_artifacts(result["mlflow_run_id"], "sweep")}
    assert files == {"sweep/sweep.md", "sweep/sweep.json", "sweep/sweep.png"}

    # the control: the teacher fine-tuned on for the distillation budget (smoke: 4 steps), unpruned
    control = by_name["control"]
    stages = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{control.info.run_id}'")
    assert [r.data.tags["stage"] for r in stages] == ["finetune"]
    assert stages[0].data.tags["upstream.finetune"] == result["teacher"].rstrip("/").rsplit("/", 1)[-1]
    assert result["control"]["metrics"]["train_steps"] == 4
    assert result["control"]["metrics"]["params"] == client.get_run(by_name["finetune"].info.run_id).data.metrics[
        "params"]

    # the parent run: the table as its description, per-ratio figures at step = parameters kept
    parent = client.get_run(result["mlflow_run_id"])
    description = parent.data.tags["mlflow.note.content"]
    for label in ("| teacher |", "| control (", "| 0.75 |", "| 0.5 |", "| 0.12 h |", "retention_vs_control"):
        assert label in description, label
    assert {"teacher_ex", "control_ex", "sweep_ex", "sweep_retention", "sweep_size_mb"} <= set(parent.data.metrics)
    history = client.get_metric_history(result["mlflow_run_id"], "sweep_ex")
    assert sorted(m.step for m in history) == sorted(row["params"] for row in result["rows"])
    assert all(row["retention_vs_control"] is None or row["retention_vs_control"] >= 0 for row in result["rows"])

    # a second sweep with one more ratio reuses the teacher, the control and every earlier ratio
    again = prune_sweep(profile="smoke", ratios=[0.75, 0.5, 0.3, 0.12])
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{again['mlflow_run_id']}'")
    assert {r.data.tags["mlflow.runName"]: r.data.tags.get("cache_hit") for r in runs
            if "stage" in r.data.tags} == {"download_base": "true", "finetune": "true"}
    control_again = next(r for r in runs if r.data.tags["mlflow.runName"] == "control")
    nested = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{control_again.info.run_id}'")
    assert [r.data.tags["cache_hit"] for r in nested] == ["true"]

    # an existing teacher given by path: no download_base/finetune runs, the 0.75 student is a cache hit
    given = prune_sweep(profile="smoke", ratios=[0.75], teacher=result["teacher"], control=False)
    assert given["rows"] == [{**result["rows"][0], "retention_vs_control": None}]
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{given['mlflow_run_id']}'")
    assert {r.data.tags["mlflow.runName"] for r in runs} == {"ratio=0.75"}


def test_sweep_measures_cpp_speed_when_asked(work_home, prefect_harness):
    from flows.sweep import prune_sweep

    result = prune_sweep(profile="smoke", ratios=[0.5], control=False, cpp_speed=True)
    row, = result["rows"]
    assert row["cpp_tokens_per_s"] > 0
    child, = [r for r in tracking.client().search_runs(
        [tracking.experiment_id()], f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'")
        if r.data.tags["mlflow.runName"] == "ratio=0.5"]
    stages = tracking.client().search_runs([tracking.experiment_id()],
                                           f"tags.mlflow.parentRunId = '{child.info.run_id}'")
    assert sorted(r.data.tags["stage"] for r in stages) == ["build", "distill", "export", "prune"]
    assert "cpp_tokens_per_s" in child.data.metrics
    assert "sweep_cpp_tokens_per_s" in tracking.client().get_run(result["mlflow_run_id"]).data.metrics


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


def test_a_sweep_whose_second_ratio_fails_leaves_every_run_closed(work_home, prefect_harness):
    import pytest

    from flows.sweep import prune_sweep
    from sqlcopilot_core.config import ConfigError

    with pytest.raises(ConfigError, match="PruneConfig.ratio"):
        prune_sweep(profile="smoke", ratios=[0.75, 1.5])
    runs = tracking.client().search_runs([tracking.experiment_id()])
    assert runs and all(r.info.status != "RUNNING" for r in runs), [
        (r.data.tags["mlflow.runName"], r.info.status) for r in runs]
    by_name = {r.data.tags["mlflow.runName"]: r for r in runs}
    assert by_name["prune-sweep"].info.status == "FAILED" and by_name["ratio=0.75"].info.status == "FINISHED"
    failed = by_name["ratio=1.5"]
    assert failed.info.status == "FAILED" and "PruneConfig.ratio" in failed.data.tags["error"]
