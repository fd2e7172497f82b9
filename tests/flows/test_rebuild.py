"""full_rebuild on the smoke profile under a real (temporary) Prefect server: caching, partial re-runs, resume."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlcopilot_core import tracking
from sqlcopilot_core.artifacts import load_artifact

REPO = Path(__file__).resolve().parents[2]


def stage_runs(parent_run_id):
    runs = tracking.client().search_runs([tracking.experiment_id()], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return {r.data.tags["stage"]: r for r in runs}


def test_second_run_is_all_cache_hits_and_one_setting_reruns_one_stage(work_home, prefect_harness):
    from flows.rebuild import full_rebuild

    first = full_rebuild(profile="smoke")
    runs = stage_runs(first["mlflow_run_id"])
    assert first["gold_ex"] == 1.0
    stages = ("download_base", "finetune", "prune", "distill", "export", "build")
    assert {s: r.data.tags["cache_hit"] for s, r in runs.items() if s != "gold_check"} == {s: "false" for s in stages}
    for stage in ("download_base", "finetune", "prune", "distill", "build"):
        assert {"ex", "params", "size_mb", "tokens_per_s"} <= set(runs[stage].data.metrics)
        assert load_artifact(first["artifacts"][stage]).manifest["mlflow_run_id"] == runs[stage].info.run_id
    # the C++ path scores what the Python path scores: same model (float32), same greedy tokens
    assert runs["build"].data.metrics["ex"] == runs["distill"].data.metrics["ex"]
    tuned_weights = Path(first["artifacts"]["finetune"]) / "model.safetensors"
    mtime = tuned_weights.stat().st_mtime_ns

    second = full_rebuild(profile="smoke")
    assert second["keys"] == first["keys"]
    runs = stage_runs(second["mlflow_run_id"])
    assert {s: r.data.tags["cache_hit"] for s, r in runs.items() if s != "gold_check"} == {s: "true" for s in stages}
    assert "train_steps" in runs["finetune"].data.metrics  # the cached run still shows what training did
    assert tuned_weights.stat().st_mtime_ns == mtime  # nothing was trained again

    third = full_rebuild(profile="smoke", overrides=["finetune.learning_rate=0.002"])
    assert third["keys"]["download_base"] == first["keys"]["download_base"]
    assert third["keys"]["finetune"] != first["keys"]["finetune"]
    runs = stage_runs(third["mlflow_run_id"])
    assert {s: r.data.tags["cache_hit"] for s, r in runs.items() if s != "gold_check"} == {
        "download_base": "true", **{s: "false" for s in stages[1:]}}


def test_the_build_ships_the_student_only_when_it_keeps_the_retention_floor(work_home, prefect_harness):
    """A floor above 1 cannot be met (retention is at most 1 when the teacher scores 0, as the random tiny model
    does): the teacher is exported, built and registered; a floor of 0 ships the student."""
    from flows.rebuild import full_rebuild

    below = full_rebuild(profile="smoke", overrides=["build.retention_floor=1.01"])
    decision = below["shipped"]
    assert decision["shipped"] == "teacher" and decision["retention_floor"] == 1.01
    assert decision["retention"] < 1.01 and "below the floor 1.01" in decision["reason"]
    exported = load_artifact(below["artifacts"]["export"])
    assert exported.manifest["upstream"] == {"finetune": below["keys"]["finetune"]}
    registered = below["registered"]["tags"]
    assert registered["shipped"] == "teacher" and registered["retention_floor"] == "1.01"
    assert registered["shipped_reason"] == decision["reason"]
    flow_run = tracking.client().get_run(below["mlflow_run_id"])
    assert flow_run.data.tags["shipped"] == "teacher" and flow_run.data.tags["shipped_reason"] == decision["reason"]
    assert flow_run.data.metrics["retention_floor"] == 1.01 and "retention" in flow_run.data.metrics
    runs = stage_runs(below["mlflow_run_id"])
    assert runs["build"].data.metrics["ex"] == runs["finetune"].data.metrics["ex"]

    met = full_rebuild(profile="smoke", overrides=["build.retention_floor=0"])
    assert met["shipped"]["shipped"] == "student" and "meets the floor 0" in met["shipped"]["reason"]
    assert load_artifact(met["artifacts"]["export"]).manifest["upstream"] == {"distill": met["keys"]["distill"]}
    assert met["registered"]["tags"]["shipped"] == "student"
    assert met["keys"]["distill"] == below["keys"]["distill"]  # the decision changes what is built, not the student
    assert tracking.client().get_run(met["mlflow_run_id"]).data.tags["shipped"] == "student"


def test_an_edited_gold_query_reruns_finetune_and_everything_after_it(work_home, prefect_harness, tmp_path):
    import json

    from flows.rebuild import full_rebuild
    from sqlcopilot_core.sample import build_sample_spider

    spider = build_sample_spider(tmp_path / "spider")
    first = full_rebuild(profile="smoke", spider_dir=str(spider))
    train = json.loads((spider / "train_spider.json").read_text())
    train[0]["query"] = train[0]["query"].rstrip(";") + " LIMIT 100"
    (spider / "train_spider.json").write_text(json.dumps(train, indent=1))

    second = full_rebuild(profile="smoke", spider_dir=str(spider))
    runs = stage_runs(second["mlflow_run_id"])
    stages = ("download_base", "finetune", "prune", "distill", "export", "build")
    assert {s: runs[s].data.tags["cache_hit"] for s in stages} == {
        "download_base": "true", **{s: "false" for s in stages[1:]}}
    assert runs["finetune"].data.tags["cache_changed"] == "data.train"
    assert {s for s in stages if second["keys"][s] != first["keys"][s]} == set(stages[1:])


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def server_port(pid: int) -> int | None:
    """The port of the temporary Prefect server (uvicorn) among the children of `pid`."""
    for child in child_pids(pid):
        try:
            args = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "uvicorn" in args and "--port" in args:
            return int(args[args.index("--port") + 1])
    return None


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def running_runs() -> list:
    return tracking.client().search_runs([tracking.experiment_id()], "attributes.status = 'RUNNING'")


def test_killed_rebuild_resumes_and_leaves_nothing_behind(work_home):
    """SIGKILL of `sqlcopilot rebuild` itself (not its process group) mid-way through fine-tuning: its temporary
    server goes with it; the next rebuild resumes from the last checkpoint, marks the killed runs FAILED and removes
    the killed run's staging folder."""
    env = {**os.environ, "SQLCOPILOT_HOME": str(work_home), "PREFECT_HOME": str(work_home / "prefect")}
    env.pop("PREFECT_API_URL", None)
    (work_home / "prefect").mkdir(parents=True)
    command = [sys.executable, "-m", "sqlcopilot_cli", "rebuild", "--profile", "smoke",
               "--set", "finetune.max_steps=60", "--set", "finetune.checkpoint_every=2"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    checkpoint_root = work_home / "artifacts" / "finetune"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            steps = [int(p.name.split("-")[1]) for p in checkpoint_root.glob(".checkpoints-*/step-*") if p.is_dir()]
            if steps and max(steps) >= 2:  # a finished checkpoint (renamed into place): training is under way
                break
            time.sleep(0.5)
        assert process.poll() is None, "the run ended before it could be killed"
        port = server_port(process.pid)
        staging = list(checkpoint_root.glob(".tmp-*"))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert port is not None and staging, "a temporary server and a staging folder while fine-tuning"
        deadline = time.monotonic() + 15
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not listening(port), "the temporary Prefect server outlived the killed rebuild"
    finally:
        try:  # whatever is left of the process group this test started
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not [p for p in checkpoint_root.iterdir() if not p.name.startswith(".")], "no artifact may be committed"
    killed_runs = {run.info.run_id for run in running_runs()}
    assert len(killed_runs) >= 2  # the flow's run and the finetune stage's

    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    artifact = next(p for p in checkpoint_root.iterdir() if not p.name.startswith("."))
    metrics = load_artifact(artifact).metrics
    assert metrics["train_resumed_from_step"] >= 2 and metrics["train_steps"] == 60
    assert not list(checkpoint_root.glob(".checkpoints-*"))  # removed once the artifact is committed
    assert not list((work_home / "artifacts").glob("*/.tmp-*"))
    assert running_runs() == []
    assert {tracking.client().get_run(run_id).info.status for run_id in killed_runs} == {"FAILED"}
