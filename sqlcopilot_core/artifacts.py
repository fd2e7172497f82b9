"""Content-addressed stage artifacts: <store>/<stage>/<key>/ with manifest.json and file checksums.

An artifact is written into a temporary folder and renamed into place only when complete, so a killed run leaves
no folder that could pass for a finished one; `load_artifact` re-checks every file before a cache hit.

    python -m sqlcopilot_core.artifacts work/artifacts/finetune/<key>
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlcopilot_core.lifetime import alive_since

MANIFEST = "manifest.json"
STAGING_PREFIX = ".tmp-"
MANIFEST_FIELDS = ("stage", "key", "config", "upstream", "code_version", "files", "metrics", "mlflow_run_id")


class ArtifactError(RuntimeError):
    """An artifact folder is missing, incomplete or altered; the message names what and how to fix it."""


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder and its manifest."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def stage(self) -> str:
        return self.manifest["stage"]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_key(stage: str, parts: dict[str, Any]) -> str:
    """sha256 over the stage name and its key parts (config, upstream keys, data and code identity), written out
    explicitly."""
    payload = json.dumps({"stage": stage, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def file_checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under `folder` but the manifest: relative path -> sha256 and size."""
    from sqlcopilot_core.identity import file_digests

    digests, out = file_digests(), {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST:
            out[rel] = {"sha256": digests.sha256(path), "bytes": path.stat().st_size}
    digests.save()
    return out


def load_artifact(path: str | Path) -> Artifact:
    """Verify an artifact folder: manifest present and complete, every listed file present with its checksum."""
    path = Path(path)
    hint = f"delete {path} and re-run its stage"
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path}: artifact folder does not exist")
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: {MANIFEST} is missing (the stage did not finish); {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc}); {hint}") from None
    absent = [name for name in MANIFEST_FIELDS if name not in manifest]
    if absent:
        raise ArtifactError(f"{manifest_path}: missing field(s) {absent}; {hint}")
    hint = f"delete {path} and re-run stage '{manifest['stage']}'"
    from sqlcopilot_core.identity import file_digests

    digests, missing, corrupt = file_digests(), [], []
    for rel, expected in manifest["files"].items():
        file = path / rel
        if not file.is_file():
            missing.append(rel)
        elif file.stat().st_size != expected["bytes"] or digests.sha256(file) != expected["sha256"]:
            corrupt.append(rel)
    digests.save()
    if missing or corrupt:
        parts = ([f"missing {missing}"] if missing else []) + ([f"corrupt (checksum differs) {corrupt}"] if corrupt else [])
        raise ArtifactError(f"{path}: {'; '.join(parts)}; {hint}")
    return Artifact(path, manifest)


class ArtifactStore:
    """The folder of all stage artifacts; one subfolder per stage, one per cache key."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Artifact | None:
        """The verified artifact for (stage, key), or None. A broken one is moved aside (kept for inspection)."""
        path = self.path(stage, key)
        if not path.exists():
            return None
        try:
            return load_artifact(path)
        except ArtifactError as exc:
            aside = path.with_name(f".broken-{key}-{int(time.time())}")
            os.replace(path, aside)
            print(f"[artifacts] not a cache hit: {exc}; moved to {aside}", file=sys.stderr)
            return None

    def staging(self, stage: str, key: str) -> Path:
        """A fresh temporary folder next to the final one (same filesystem, so the final rename is atomic)."""
        path = self.root / stage / f"{STAGING_PREFIX}{key}-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        path.mkdir(parents=True)
        return path

    def commit(self, staging: Path, *, stage: str, key: str, config: dict[str, Any], upstream: dict[str, str],
               version: str, metrics: dict[str, Any] | None = None, mlflow_run_id: str | None = None,
               extra: dict[str, Any] | None = None) -> Artifact:
        """Checksum the staged files, write the manifest last, and rename the folder into place."""
        manifest = {"stage": stage, "key": key, "config": config, "upstream": upstream, "code_version": version,
                    "files": file_checksums(staging), "metrics": metrics or {}, "mlflow_run_id": mlflow_run_id,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})}
        tmp_manifest = staging / (MANIFEST + ".tmp")
        tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        os.replace(tmp_manifest, staging / MANIFEST)
        final = self.path(stage, key)
        if final.exists():  # another run finished the same key first: keep the verified one
            shutil.rmtree(staging)
            return load_artifact(final)
        os.replace(staging, final)
        return load_artifact(final)

    def clean_stale_staging(self) -> list[Path]:
        """Remove the staging folders of every stage whose process has ended (a killed run); returns them. A folder
        of a run still going on, here or on another host, is kept."""
        removed = []
        for path in sorted(self.root.glob(f"*/{STAGING_PREFIX}*")):
            owner = staging_owner(path.name)
            if owner is not None and alive_since(*owner) is False:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def clean_staging(self, stage: str) -> int:
        """Remove temporary folders left by killed runs of `stage`; returns how many."""
        removed = 0
        for path in (self.root / stage).glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        return removed


def staging_owner(name: str) -> tuple[str, int, int] | None:
    """(host, pid, creation time in ns) of a staging folder's name, None when it is not one. Folders named before
    the host was part of the name ('.tmp-<key>-<pid>-<ns>') belong to this host."""
    _, _, rest = name[len(STAGING_PREFIX):].partition("-")
    parts = rest.rsplit("-", 2)
    if not name.startswith(STAGING_PREFIX) or not all(part.isdigit() for part in parts[-2:]) or len(parts) < 2:
        return None
    host = parts[0] if len(parts) == 3 else socket.gethostname()
    return host, int(parts[-2]), int(parts[-1])


def main(argv: list[str]) -> None:
    artifact = load_artifact(argv[0])
    print(json.dumps({k: artifact.manifest[k] for k in ("stage", "key", "upstream", "metrics")}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
