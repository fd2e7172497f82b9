from sqlcopilot_core import tracking


def test_parent_and_nested_runs_in_local_sqlite_store(work_home):
    parent = tracking.start_run("full-rebuild", {"profile": "smoke", "finetune": {"lr": 1e-3}})
    child = tracking.start_run("finetune", {"lr": 1e-3, "targets": ["q_proj"]}, parent_run_id=parent,
                               tags={"stage": "finetune"})
    tracking.log_metrics(child, {"ex": 0.25, "params": 1000, "skip_me": "text", "nan": float("nan")})
    tracking.end_run(child)
    tracking.end_run(parent)
    assert (work_home / "mlflow.db").exists()
    run = tracking.client().get_run(child)
    assert run.data.metrics == {"ex": 0.25, "params": 1000.0}
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.params["targets"] == '["q_proj"]'
    assert tracking.client().get_run(parent).data.params["finetune.lr"] == "0.001"
    children = tracking.client().search_runs([tracking.experiment_id()], f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_id for r in children] == [child]


def test_tracking_uri_env_points_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    run_id = tracking.start_run("x")
    tracking.end_run(run_id)
    assert (tmp_path / "other.db").exists()


def test_a_run_always_closes(work_home):
    import pytest

    with tracking.run("fine") as fine:
        pass
    with pytest.raises(ValueError, match="broken"):
        with tracking.run("broken") as broken:
            raise ValueError("broken stage")
    with pytest.raises(KeyboardInterrupt):
        with tracking.run("stopped") as stopped:
            raise KeyboardInterrupt
    runs = {run_id: tracking.client().get_run(run_id) for run_id in (fine, broken, stopped)}
    assert [runs[r].info.status for r in (fine, broken, stopped)] == ["FINISHED", "FAILED", "KILLED"]
    assert runs[broken].data.tags["error"] == "ValueError: broken stage"


def test_runs_of_a_killed_process_are_marked_failed_at_the_next_start(work_home):
    import os
    import signal
    import subprocess
    import sys

    script = ("import os, signal\nfrom sqlcopilot_core import tracking\n"
              "parent = tracking.start_run('full-rebuild')\ntracking.start_run('finetune', parent_run_id=parent)\n"
              "print(parent, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "SQLCOPILOT_HOME": str(work_home)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    mine = tracking.start_run("going on beside")
    running = tracking.client().search_runs([tracking.experiment_id()], "attributes.status = 'RUNNING'")
    assert len(running) == 3
    failed = tracking.fail_orphaned_runs()
    assert len(failed) == 2 and mine not in failed
    for run_id in failed:
        run = tracking.client().get_run(run_id)
        assert run.info.status == "FAILED" and "killed" in run.data.tags["sqlcopilot.ended"]
    assert tracking.client().get_run(mine).info.status == "RUNNING"
    assert tracking.fail_orphaned_runs() == []
