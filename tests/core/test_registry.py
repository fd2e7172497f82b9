import json
import shutil

import mlflow
import pytest

from sqlcopilot_core import paths, registry, tracking
from sqlcopilot_core.artifacts import ArtifactStore

KEYS = {"download_base": "k-base", "finetune": "k-tuned", "distill": "k-distill", "export": "k-export"}


@pytest.fixture(scope="module")
def mlflow_home(tmp_path_factory):
    """One MLflow store for the module (creating one costs seconds); tests keep apart by model name and keys."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("registry") / "work"
        patch.setenv("SQLCOPILOT_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield home


@pytest.fixture()
def name(mlflow_home, tmp_path, monkeypatch, request):
    """A model name of the test's own, over the shared MLflow store and a private artifact store."""
    monkeypatch.setenv("SQLCOPILOT_HOME", str(mlflow_home))
    monkeypatch.setenv("SQLCOPILOT_STORE", str(tmp_path / "store"))
    return request.node.name.removeprefix("test_")[:60]


def committed(key, stage="export", weights=b"weights", run_id=None):
    store = ArtifactStore(paths.artifact_store())
    staging = store.staging(stage, key)
    (staging / "model.pt").write_bytes(weights)
    return store.commit(staging, stage=stage, key=key, config={}, upstream={"distill": "k-distill"},
                        version="v1", metrics={}, mlflow_run_id=run_id)


def test_should_promote_when_no_champion_or_at_least_as_good():
    assert registry.should_promote(0.1, None)
    assert registry.should_promote(0.5, 0.5)
    assert registry.should_promote(0.6, 0.5)
    assert not registry.should_promote(0.49, 0.5)


def test_versions_carry_scores_keys_and_path_and_champion_moves_only_on_equal_or_better(name):
    scores = {"ex": 0.5, "params": 1000.0, "size_mb": 2.5, "tokens_per_s": 40.0, "n": 6.0}
    first = registry.register_artifact(committed("a"), KEYS, scores, name)
    assert set(first.aliases) == {"candidate", "champion"}
    assert first.tags["ex"] == "0.5" and first.tags["params"] == "1000" and first.tags["n"] == "6"
    assert first.tags["tokens_per_s"] == "40.0" and first.tags["size_mb"] == "2.5"
    assert {first.tags[f"key.{s}"] for s in KEYS} == set(KEYS.values())
    assert first.tags["artifact_path"] == str(paths.artifact_store() / "export" / "a")
    assert first.tags["artifact_stage"] == "export" and first.tags["artifact_key"] == "a"

    worse = registry.register_artifact(committed("b"), KEYS, {**scores, "ex": 0.4}, name)
    assert set(worse.aliases) == {"candidate"}
    assert registry.get_version(name, "champion").version == first.version
    tie = registry.register_artifact(committed("c"), KEYS, {**scores, "ex": 0.5}, name)
    assert set(tie.aliases) == {"candidate", "champion"}
    assert set(registry.get_version(name, worse.version).aliases) == set()
    assert registry.version_artifact(registry.get_version(name, 1)).key == "a"
    assert registry.version_artifact(registry.get_version(name, "2")).key == "b"

    # registering an artifact again with the same scores (an all-cache-hit rebuild) reuses its version
    again = registry.register_artifact(registry.version_artifact(worse), KEYS, {**scores, "ex": 0.4}, name)
    assert again.version == worse.version and set(again.aliases) == {"candidate"}
    rescored = registry.register_artifact(registry.version_artifact(worse), KEYS, {**scores, "ex": 0.45}, name)
    assert int(rescored.version) == int(tie.version) + 1


def test_version_source_is_a_small_pointer_not_the_weights(name, tmp_path):
    artifact = committed("p", weights=b"x" * 4096)
    version = registry.register_artifact(artifact, KEYS, {"ex": 0.25}, name)
    assert version.source.startswith("runs:/") and version.run_id
    folder = mlflow.artifacts.download_artifacts(version.source, dst_path=str(tmp_path / "download"))
    assert sorted(p.name for p in tmp_path.joinpath("download", "model").iterdir()) == ["manifest.json",
                                                                                         "pointer.json"]
    pointer = json.loads((tmp_path / "download" / "model" / "pointer.json").read_text())
    assert pointer["artifact_path"] == str(artifact.path) and pointer["stage_keys"] == KEYS
    assert folder.endswith("model")


def test_scores_come_from_the_flows_stage_run_else_the_producing_run(name):
    key = f"{name}-key"
    parent = tracking.start_run("full-rebuild")
    producer = tracking.start_run("export", tags={"stage": "export", "cache_key": key})
    tracking.log_metrics(producer, {"ex": 0.2, "params": 10})
    tracking.end_run(producer)
    artifact = committed(key, run_id=producer)
    assert registry.artifact_scores(artifact, parent)["ex"] == 0.2  # nothing under this parent yet
    stage_run = tracking.start_run("export", parent_run_id=parent, tags={"stage": "export", "cache_key": key})
    tracking.log_metrics(stage_run, {"ex": 0.3, "params": 10, "size_mb": 1.0, "tokens_per_s": 5.0, "loss": 1.0})
    tracking.end_run(stage_run)
    assert registry.artifact_scores(artifact, parent) == {"ex": 0.3, "params": 10, "size_mb": 1.0,
                                                          "tokens_per_s": 5.0}


def test_unscored_artifact_is_refused_with_its_path(name):
    artifact = committed(f"{name}-unscored")
    with pytest.raises(registry.RegistryError, match=r"unscored.*no execution accuracy"):
        registry.artifact_scores(artifact)


def test_get_version_names_what_is_missing(name):
    with pytest.raises(registry.RegistryError, match=f"no registered model '{name}'.*full-rebuild"):
        registry.get_version(name, "champion")
    registry.register_artifact(committed("g"), KEYS, {"ex": 0.1}, name)
    with pytest.raises(registry.RegistryError, match=r"no version or alias 'gold'.*\['candidate', 'champion'\]"):
        registry.get_version(name, "gold")


def test_version_artifact_follows_a_moved_store_and_refuses_a_corrupt_one(name, tmp_path, monkeypatch):
    version = registry.register_artifact(committed("m"), KEYS, {"ex": 0.1}, name)
    moved_store = tmp_path / "shared-store"
    shutil.move(str(paths.artifact_store()), moved_store)
    monkeypatch.setenv("SQLCOPILOT_STORE", str(moved_store))
    assert registry.version_artifact(version).path == moved_store / "export" / "m"
    (moved_store / "export" / "m" / "model.pt").write_bytes(b"tampered")
    with pytest.raises(registry.RegistryError, match=r"version 1: .*corrupt.*model.pt"):
        registry.version_artifact(version)


def test_regression_only_beyond_tolerance_and_message_names_metric_and_values():
    within = registry.Comparison("registration of version 1", 0.5, 0.48)
    beyond = registry.Comparison("the previous nightly", 0.5, 0.47)
    assert registry.regression_messages([within], 0.02) == []
    [message] = registry.regression_messages([within, beyond], 0.02)
    assert message == ("ex dropped from 0.5000 at the previous nightly to 0.4700 tonight (change -0.0300), "
                       "more than the tolerance 0.02")
    assert registry.Comparison("x", 0.5, 0.9).regressed(0.0) is False


def test_a_drop_is_a_regression_only_when_its_interval_says_it_is_real():
    before = {str(i): i < 50 for i in range(100)}  # 50 of 100 right
    noise = {**before, "0": False, "1": False, "2": False, "60": True}  # 3 lost, 1 gained: -0.02
    real = {k: v and int(k) >= 20 for k, v in before.items()}  # 20 lost, none gained: -0.20
    small = registry.paired_comparison("last night", before, noise)
    large = registry.paired_comparison("last night", before, real)
    assert small.change == pytest.approx(-0.02) and small.change_interval[1] > 0 and not small.regressed(0.01)
    assert large.change == pytest.approx(-0.20) and large.change_interval[1] < 0 and large.regressed(0.01)
    assert "95% interval" in large.message()
    assert registry.paired_comparison("x", {"1": True}, {"2": True}) is None  # no shared example


def test_outcomes_are_read_from_a_scoring_folder(tmp_path):
    lines = [{"index": 3, "match": True}, {"index": 7, "match": False}]
    (tmp_path / "predictions_scored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert registry.write_outcomes(tmp_path) == {"3": True, "7": False}
    assert json.loads((tmp_path / registry.OUTCOMES_FILE).read_text()) == {"3": True, "7": False}


def test_markdown_report_has_one_row_per_reference_and_metric():
    text = registry.comparison_markdown("nightly", [registry.Comparison("registration of version 2", 0.9, 0.5)],
                                        0.02, {"ex": 0.5, "params": 1000}, {"ex": "0.9", "params": "1000"})
    assert "| registration of version 2 | 0.9000 | 0.5000 | -0.4000 | - | REGRESSION |" in text
    assert "| params | 1000 | 1000 |" in text and "| size_mb | - | - |" in text


def test_previous_nightly_is_the_newest_finished_run_with_the_same_settings(name):
    def nightly(ex, key="e1", status="FINISHED", model=name):
        run_id = tracking.start_run(registry.NIGHTLY_RUN,
                                    tags={"nightly": "true", "model_name": model, "eval_key": key})
        tracking.log_metrics(run_id, {"ex": ex})
        tracking.end_run(run_id, status)
        return run_id

    assert registry.previous_nightly(name, "e1") is None
    older = nightly(0.4)
    newest_good = nightly(0.5)
    nightly(0.1, status="FAILED")
    nightly(0.9, key="other-settings")
    nightly(0.8, model=f"{name}-other")
    assert registry.previous_nightly(name, "e1").info.run_id == newest_good != older
    assert registry.eval_key({"limit": 6, "split": "dev"}) == registry.eval_key({"split": "dev", "limit": 6})
