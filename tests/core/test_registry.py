import json
import shutil

import mlflow
import pytest

from sqlcopilot_core import paths, registry, tracking
from sqlcopilot_core.artifacts import ArtifactStore


def committed(stage="export", key="k-export", weights=b"weights", upstream=None, metrics=None, run_id=None):
    store = ArtifactStore(paths.artifact_store())
    staging = store.staging(stage, key)
    (staging / "model.pt").write_bytes(weights)
    return store.commit(staging, stage=stage, key=key, config={}, upstream=upstream or {"distill": "k-distill"},
                        version="v1", metrics=metrics or {}, mlflow_run_id=run_id)


def stage_run(artifact, metrics, parent=None):
    run_id = tracking.start_run(artifact.stage, parent_run_id=parent,
                                tags={"stage": artifact.stage, "cache_key": artifact.key})
    tracking.log_metrics(run_id, metrics)
    tracking.end_run(run_id)
    return run_id


KEYS = {"download_base": "k-base", "finetune": "k-tuned", "distill": "k-distill", "export": "k-export"}


def test_should_promote_when_no_champion_or_at_least_as_good():
    assert registry.should_promote(0.1, None)
    assert registry.should_promote(0.5, 0.5)
    assert registry.should_promote(0.6, 0.5)
    assert not registry.should_promote(0.49, 0.5)


def test_versions_carry_scores_keys_and_path_and_champion_moves_only_on_equal_or_better(work_home):
    scores = {"ex": 0.5, "params": 1000, "size_mb": 2.5, "tokens_per_s": 40.0, "n": 6}
    first = registry.register_artifact(committed(key="a"), KEYS, scores)
    assert set(first.aliases) == {"candidate", "champion"}
    assert first.tags["ex"] == "0.5" and first.tags["params"] == "1000" and first.tags["tokens_per_s"] == "40.0"
    assert {first.tags[f"key.{s}"] for s in KEYS} == set(KEYS.values())
    assert first.tags["artifact_path"] == str(paths.artifact_store() / "export" / "a")
    assert first.tags["artifact_stage"] == "export" and first.tags["artifact_key"] == "a"

    worse = registry.register_artifact(committed(key="b"), KEYS, {**scores, "ex": 0.4})
    assert set(worse.aliases) == {"candidate"}
    assert registry.get_version("sqlcopilot", "champion").version == first.version
    tie = registry.register_artifact(committed(key="c"), KEYS, {**scores, "ex": 0.5})
    assert set(tie.aliases) == {"candidate", "champion"}
    assert set(registry.get_version("sqlcopilot", worse.version).aliases) == set()
    assert registry.version_artifact(registry.get_version("sqlcopilot", 1)).key == "a"


def test_version_source_is_a_small_pointer_not_the_weights(work_home):
    artifact = committed(key="p", weights=b"x" * 4096)
    version = registry.register_artifact(artifact, KEYS, {"ex": 0.25})
    local = mlflow.artifacts.download_artifacts(version.source, dst_path=str(work_home / "download"))
    names = sorted(p.name for p in (work_home / "download" / "model").iterdir())
    assert names == ["manifest.json", "pointer.json"]
    pointer = json.loads((work_home / "download" / "model" / "pointer.json").read_text())
    assert pointer["artifact_path"] == str(artifact.path) and pointer["stage_keys"] == KEYS
    assert local.endswith("model") and version.run_id


def test_scores_come_from_the_flows_stage_run_else_the_producing_run(work_home):
    parent = tracking.start_run("full-rebuild")
    producer = tracking.start_run("export", tags={"stage": "export", "cache_key": "s"})
    tracking.log_metrics(producer, {"ex": 0.2, "params": 10})
    tracking.end_run(producer)
    artifact = committed(key="s", run_id=producer)
    assert registry.artifact_scores(artifact, parent)["ex"] == 0.2  # nothing under this parent yet
    stage_run(artifact, {"ex": 0.3, "params": 10, "size_mb": 1.0, "tokens_per_s": 5.0, "loss": 1.0}, parent)
    assert registry.artifact_scores(artifact, parent) == {"ex": 0.3, "params": 10, "size_mb": 1.0,
                                                          "tokens_per_s": 5.0}


def test_unscored_artifact_is_refused_with_its_path(work_home):
    artifact = committed(key="unscored")
    with pytest.raises(registry.RegistryError, match=r"unscored.*no execution accuracy"):
        registry.artifact_scores(artifact)


def test_get_version_names_what_is_missing(work_home):
    with pytest.raises(registry.RegistryError, match="no registered model 'sqlcopilot'.*full-rebuild"):
        registry.get_version("sqlcopilot", "champion")
    registry.register_artifact(committed(key="g"), KEYS, {"ex": 0.1})
    with pytest.raises(registry.RegistryError, match=r"no version or alias 'gold'.*\['candidate', 'champion'\]"):
        registry.get_version("sqlcopilot", "gold")


def test_version_artifact_follows_a_moved_store_and_refuses_a_corrupt_one(work_home, tmp_path, monkeypatch):
    artifact = committed(key="m")
    version = registry.register_artifact(artifact, KEYS, {"ex": 0.1})
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


def test_markdown_report_has_one_row_per_reference_and_metric():
    text = registry.comparison_markdown("nightly", [registry.Comparison("registration of version 2", 0.9, 0.5)],
                                        0.02, {"ex": 0.5, "params": 1000}, {"ex": "0.9", "params": "1000"})
    assert "| registration of version 2 | 0.9000 | 0.5000 | -0.4000 | REGRESSION |" in text
    assert "| params | 1000 | 1000 |" in text and "| size_mb | - | - |" in text


def test_previous_nightly_is_the_newest_finished_run_with_the_same_settings(work_home):
    def nightly(ex, key="e1", status="FINISHED", name="sqlcopilot"):
        run_id = tracking.start_run(registry.NIGHTLY_RUN,
                                    tags={"nightly": "true", "model_name": name, "eval_key": key})
        tracking.log_metrics(run_id, {"ex": ex})
        tracking.end_run(run_id, status)
        return run_id

    assert registry.previous_nightly("sqlcopilot", "e1") is None
    older = nightly(0.4)
    newest_good = nightly(0.5)
    nightly(0.1, status="FAILED")
    nightly(0.9, key="other-settings")
    nightly(0.8, name="another-model")
    assert registry.previous_nightly("sqlcopilot", "e1").info.run_id == newest_good != older
    assert registry.eval_key({"limit": 6, "split": "dev"}) == registry.eval_key({"split": "dev", "limit": 6})
