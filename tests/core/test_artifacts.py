import json
import os

import pytest

from sqlcopilot_core.artifacts import ArtifactError, ArtifactStore, cache_key, load_artifact


def make(store: ArtifactStore, key="k1", payload=b"weights"):
    staging = store.staging("finetune", key)
    (staging / "model.safetensors").write_bytes(payload)
    (staging / "sub").mkdir()
    (staging / "sub" / "preds.jsonl").write_text("{}\n")
    return store.commit(staging, stage="finetune", key=key, config={"lr": 1e-4}, upstream={"download_base": "abc"},
                        version="v1", metrics={"ex": 0.5})


def test_commit_writes_exact_file_set_and_verifies(tmp_path):
    store = ArtifactStore(tmp_path)
    artifact = make(store)
    assert artifact.path == tmp_path / "finetune" / "k1"
    assert sorted(p.relative_to(artifact.path).as_posix() for p in artifact.path.rglob("*") if p.is_file()) == [
        "manifest.json", "model.safetensors", "sub/preds.jsonl"]
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest["stage"] == "finetune" and manifest["upstream"] == {"download_base": "abc"}
    assert set(manifest["files"]) == {"model.safetensors", "sub/preds.jsonl"}
    assert store.lookup("finetune", "k1").metrics == {"ex": 0.5}
    assert not list((tmp_path / "finetune").glob(".tmp-*"))


def test_half_written_artifact_is_not_a_cache_hit(tmp_path):
    store = ArtifactStore(tmp_path)
    staging = store.staging("finetune", "k2")
    (staging / "model.safetensors").write_bytes(b"partial")
    # a killed run leaves only its staging folder: the final path does not exist
    assert store.lookup("finetune", "k2") is None
    # a folder at the final path without a manifest (e.g. copied by hand) is refused with a message
    final = store.path("finetune", "k3")
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_artifact(final)
    assert store.lookup("finetune", "k3") is None
    assert not final.exists() and list((tmp_path / "finetune").glob(".broken-k3-*"))  # kept aside, not deleted
    assert store.clean_staging("finetune") == 1


def test_tampered_and_missing_files_are_named(tmp_path):
    store = ArtifactStore(tmp_path)
    artifact = make(store)
    (artifact.path / "model.safetensors").write_bytes(b"weightZ")  # same size, other bytes
    with pytest.raises(ArtifactError, match=r"corrupt \(checksum differs\) \['model.safetensors'\].*re-run stage 'finetune'"):
        load_artifact(artifact.path)
    os.remove(artifact.path / "sub" / "preds.jsonl")
    with pytest.raises(ArtifactError, match=r"missing \['sub/preds.jsonl'\]"):
        load_artifact(artifact.path)
    assert store.lookup("finetune", "k1") is None


def test_manifest_that_is_not_json_or_incomplete(tmp_path):
    store = ArtifactStore(tmp_path)
    artifact = make(store)
    (artifact.path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(artifact.path)
    (artifact.path / "manifest.json").write_text(json.dumps({"stage": "finetune"}))
    with pytest.raises(ArtifactError, match="missing field"):
        load_artifact(artifact.path)


def test_cache_key_depends_on_every_input():
    parts = {"config": {"ratio": 0.5}, "upstream": {"finetune": "a"}, "data": {"train": "d1"}, "code": "v1"}
    base = cache_key("prune", parts)
    assert base == cache_key("prune", dict(parts))
    variants = [{**parts, "config": {"ratio": 0.25}}, {**parts, "upstream": {"finetune": "b"}},
                {**parts, "data": {"train": "d2"}}, {**parts, "code": "v2"}]
    assert len({base, cache_key("distill", parts), *(cache_key("prune", v) for v in variants)}) == 6


def test_a_file_rewritten_within_the_same_clock_tick_is_still_caught(tmp_path, work_home):
    """Checksums are remembered by file identity (size, mtime, ctime, inode); a file written seconds ago is never
    taken from memory, so a same-size rewrite right after the commit is caught."""
    store = ArtifactStore(tmp_path)
    artifact = make(store)
    load_artifact(artifact.path)
    with open(artifact.path / "model.safetensors", "r+b") as handle:
        handle.write(b"X")
    with pytest.raises(ArtifactError, match="corrupt"):
        load_artifact(artifact.path)


def ended_process_pid() -> int:
    """The pid of a process that has just ended (and, being just ended, not yet reused)."""
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_staging_folders_of_ended_processes_are_removed_at_start_up(tmp_path):
    import socket
    import time

    store = ArtifactStore(tmp_path)
    live = store.staging("finetune", "k1")  # this process's: a run going on
    now = time.time_ns()
    killed = tmp_path / "prune" / f".tmp-k2-{socket.gethostname()}-{ended_process_pid()}-{now}"
    older_name = tmp_path / "export" / f".tmp-k3-{ended_process_pid()}-{now}"  # named before the host was part of it
    elsewhere = tmp_path / "distill" / f".tmp-k4-another-host.example-{os.getpid()}-{now}"
    for folder in (killed, older_name, elsewhere):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "weights.bin").write_bytes(b"partial")
    checkpoints = tmp_path / "finetune" / ".checkpoints-k1"
    checkpoints.mkdir()
    assert store.clean_stale_staging() == [older_name, killed]
    assert live.is_dir() and elsewhere.is_dir() and checkpoints.is_dir()
    assert not killed.exists() and not older_name.exists()
