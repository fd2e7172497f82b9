"""The MLflow model registry: register a stage artifact as a model version, move the candidate/champion aliases,
and compare a nightly re-evaluation with the score recorded at registration and with the previous nightly.

A version does not copy the weights: its source is a small run artifact (`model/pointer.json` + the artifact's
`manifest.json`) and its tags carry the artifact's path, the cache key of every stage and the scores.

    python -m sqlcopilot_core.registry sqlcopilot champion
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlcopilot_core import paths, tracking
from sqlcopilot_core.artifacts import MANIFEST, Artifact, ArtifactError, load_artifact

MODEL_NAME = "sqlcopilot"
CANDIDATE, CHAMPION = "candidate", "champion"
# Scores copied onto every version as tags: the registry is where an operator compares versions at a glance.
SCORE_TAGS = (*tracking.MODEL_METRICS, "n")
COUNT_TAGS = ("params", "n")
SOURCE_PATH = "model"
NIGHTLY_RUN = "nightly-eval"


class RegistryError(RuntimeError):
    """A registered model, version or alias is missing or unusable; the message says which and how to fix it."""


class RegressionError(RuntimeError):
    """A nightly re-evaluation scored a registered model worse than a reference by more than the tolerance."""


def should_promote(candidate_ex: float, champion_ex: float | None) -> bool:
    """A new version becomes champion when there is none or it scores at least as well (ties favour the newer)."""
    return champion_ex is None or candidate_ex >= champion_ex


def artifact_scores(artifact: Artifact, parent_run_id: str | None = None) -> dict[str, float]:
    """The model metrics MLflow holds for `artifact`: its newest stage run (under `parent_run_id` when given),
    else the run that produced it; ex is required, since promotion is decided on it."""
    query = f"tags.stage = '{artifact.stage}' and tags.cache_key = '{artifact.key}'"
    if parent_run_id:
        query += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
    runs = tracking.client().search_runs([tracking.experiment_id()], query, order_by=["attributes.start_time DESC"])
    candidates = [run.data.metrics for run in runs] + [produced_run_metrics(artifact), artifact.metrics]
    for metrics in candidates:
        if "ex" in metrics:
            return {name: metrics[name] for name in SCORE_TAGS if name in metrics}
    raise RegistryError(f"{artifact.path}: no execution accuracy (ex) recorded for stage '{artifact.stage}' key "
                        f"{artifact.key} in MLflow ({tracking.client().tracking_uri}); score the stage before "
                        f"registering it")


def produced_run_metrics(artifact: Artifact) -> dict[str, float]:
    """Metrics of the run named in the manifest; none when that run lives in another tracking store."""
    from mlflow.exceptions import MlflowException

    run_id = artifact.manifest.get("mlflow_run_id")
    try:
        return tracking.run_metrics(run_id) if run_id else {}
    except MlflowException:
        return {}


def version_tags(artifact: Artifact, stage_keys: dict[str, str], scores: dict[str, Any]) -> dict[str, str]:
    # MLflow hands metrics back as floats: counts are tagged as integers (params=184992, not 184992.0)
    tags = {name: str(int(scores[name]) if name in COUNT_TAGS else scores[name]) for name in SCORE_TAGS
            if name in scores}
    tags.update({f"key.{stage}": key for stage, key in stage_keys.items()})
    tags.update({"artifact_path": str(artifact.path), "artifact_stage": artifact.stage,
                 "artifact_key": artifact.key})
    return tags


def log_version_source(run_id: str, artifact: Artifact, stage_keys: dict[str, str]) -> str:
    """Log the pointer + manifest under the run's `model/` folder; returns the runs:/ URI a version points at."""
    pointer = {"artifact_path": str(artifact.path), "artifact_store": str(paths.artifact_store()),
               "stage": artifact.stage, "key": artifact.key, "stage_keys": stage_keys}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "pointer.json").write_text(json.dumps(pointer, indent=2))
        (Path(folder) / MANIFEST).write_text((artifact.path / MANIFEST).read_text())
        for name in ("pointer.json", MANIFEST):
            tracking.log_artifact(run_id, str(Path(folder) / name), SOURCE_PATH)
    return f"runs:/{run_id}/{SOURCE_PATH}"


def shipping_tags(decision: dict[str, Any]) -> dict[str, str]:
    """Which model a version holds and why (the build stage's ship_decision), as version tags."""
    return {"shipped": str(decision["shipped"]), "shipped_reason": str(decision["reason"]),
            "retention": str(round(float(decision["retention"]), 6)),
            "retention_floor": str(decision["retention_floor"])}


def register_artifact(artifact: Artifact, stage_keys: dict[str, str], scores: dict[str, Any],
                      name: str = MODEL_NAME, run_id: str | None = None, extra_tags: dict[str, str] | None = None):
    """Register `artifact` as a new version of `name` (aliased candidate; champion when should_promote).

    The version's source is logged into `run_id` (the flow's MLflow run) or, without one, a run of its own.
    `extra_tags` (e.g. shipping_tags) are added to the version's tags. An artifact already registered with the same
    scores (a rebuild that was all cache hits) keeps its version, which
    becomes the candidate again. Returns the ModelVersion with its aliases.
    """
    if "ex" not in scores:
        raise RegistryError(f"register_artifact({artifact.path}): scores need 'ex', got {sorted(scores)}")
    mlflow_client = tracking.client()
    tags = {**version_tags(artifact, stage_keys, scores), **(extra_tags or {})}
    same = registered_version(name, tags)
    if same is not None:
        return set_aliases(name, same.version, float(scores["ex"]))
    own_run = run_id is None
    run_id = run_id or tracking.start_run(f"register-{name}", tags={"registered_model": name})
    source = log_version_source(run_id, artifact, stage_keys)
    if own_run:
        tracking.end_run(run_id)
    if not mlflow_client.search_registered_models(f"name = '{name}'"):
        mlflow_client.create_registered_model(name, description="SQL-Copilot text-to-SQL models; tags point at "
                                                                "the artifact store")
    version = mlflow_client.create_model_version(
        name, source, run_id, tags=tags, description=f"{artifact.stage} artifact {artifact.key} (ex={scores['ex']})")
    return set_aliases(name, version.version, float(scores["ex"]))


def registered_version(name: str, tags: dict[str, str]):
    """The version of `name` whose tags are exactly `tags`' scores, keys and artifact, or None."""
    query = f"name = '{name}' and tags.artifact_key = '{tags['artifact_key']}'"
    for version in tracking.client().search_model_versions(query):
        if all(version.tags.get(key) == value for key, value in tags.items()):
            return version
    return None


def set_aliases(name: str, version: str, ex: float):
    """`version` becomes the candidate, and the champion when should_promote against the current champion."""
    mlflow_client = tracking.client()
    mlflow_client.set_registered_model_alias(name, CANDIDATE, version)
    champion = alias_version(name, CHAMPION)
    if should_promote(ex, version_ex(champion) if champion else None):
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    return mlflow_client.get_model_version(name, version)


def alias_version(name: str, alias: str):
    """The version behind `alias`, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def get_version(name: str, alias_or_version: str | int):
    """A ModelVersion by number ('3', 3) or alias ('champion'); RegistryError naming what exists otherwise."""
    from mlflow.exceptions import MlflowException

    mlflow_client = tracking.client()
    wanted = str(alias_or_version)
    try:
        if wanted.isdigit():
            return mlflow_client.get_model_version(name, wanted)
        return mlflow_client.get_model_version_by_alias(name, wanted)
    except MlflowException:
        pass
    models = mlflow_client.search_registered_models(f"name = '{name}'")
    if not models:
        raise RegistryError(f"no registered model {name!r} in {mlflow_client.tracking_uri}; run the full-rebuild "
                            f"flow (it registers its final artifact) first")
    aliases = sorted(models[0].aliases or {})
    raise RegistryError(f"registered model {name!r} has no version or alias {wanted!r} (aliases: {aliases})")


def version_ex(version) -> float:
    if "ex" not in version.tags:
        raise RegistryError(f"model {version.name} version {version.version}: tag 'ex' is missing")
    return float(version.tags["ex"])


def version_artifact(version) -> Artifact:
    """The verified artifact a version points at; if the store moved (shared storage), the same stage/key under
    the current artifact store."""
    tags = version.tags
    if "artifact_path" not in tags:
        raise RegistryError(f"model {version.name} version {version.version}: tag 'artifact_path' is missing; "
                            f"it was not registered by sqlcopilot_core.registry")
    recorded = Path(tags["artifact_path"])
    moved = paths.artifact_store() / tags.get("artifact_stage", "") / tags.get("artifact_key", "")
    path = moved if not recorded.exists() and moved.exists() else recorded
    try:
        return load_artifact(path)
    except ArtifactError as exc:
        raise RegistryError(f"model {version.name} version {version.version}: {exc}") from exc


OUTCOMES_FILE = "outcomes.json"


def write_outcomes(score_dir: Path) -> dict[str, bool]:
    """{example index: matched} of a scoring folder's predictions_scored.jsonl, also written as outcomes.json."""
    outcomes = {}
    scored = Path(score_dir) / "predictions_scored.jsonl"
    if scored.is_file():
        for line in scored.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            outcomes[str(record["index"])] = bool(record["match"])
    (Path(score_dir) / OUTCOMES_FILE).write_text(json.dumps(outcomes))
    return outcomes


def read_outcomes(run_id: str, folder: str) -> dict[str, bool]:
    """The per-example outcomes an earlier nightly run logged ({} when it logged none)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracking.client().download_artifacts(run_id, f"{folder}/{OUTCOMES_FILE}", tmp)
        except Exception:  # an older run without the file: no paired comparison
            return {}
        return json.loads(Path(path).read_text())


def eval_key(eval_settings: dict[str, Any]) -> str:
    """Nightly results are compared only when scored with the same evaluation settings."""
    return hashlib.sha256(json.dumps(eval_settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def previous_nightly(name: str, key: str):
    """The newest finished (not regressed) nightly run of model `name` under evaluation settings `key`, or None."""
    query = (f"tags.nightly = 'true' and tags.model_name = '{name}' and tags.eval_key = '{key}' "
             f"and attributes.status = 'FINISHED'")
    runs = tracking.client().search_runs([tracking.experiment_id()], query,
                                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


@dataclass(frozen=True)
class Comparison:
    """Tonight's ex against one reference score, with the 95% interval of the change when it is known: paired
    (the same examples scored both times: only the examples whose outcome changed count), or tonight's own
    interval against a reference taken as fixed."""

    reference: str
    reference_ex: float
    nightly_ex: float
    change_interval: tuple[float, float] | None = None

    @property
    def change(self) -> float:
        return self.nightly_ex - self.reference_ex

    def regressed(self, tolerance: float) -> bool:
        """A drop beyond the tolerance that the interval says is real (its upper end below zero)."""
        # the small slack keeps a drop of exactly `tolerance` (e.g. 0.5 -> 0.48) from failing on float rounding
        beyond = self.change < -tolerance - 1e-9
        return beyond and (self.change_interval is None or self.change_interval[1] < 0)

    def message(self) -> str:
        interval = ("" if self.change_interval is None else
                    f", 95% interval {self.change_interval[0]:+.4f} to {self.change_interval[1]:+.4f}")
        return (f"ex dropped from {self.reference_ex:.4f} at {self.reference} to {self.nightly_ex:.4f} tonight "
                f"(change {self.change:+.4f}{interval})")


def paired_comparison(reference: str, before: dict[str, bool], after: dict[str, bool]) -> Comparison | None:
    """Tonight against an earlier scoring of the same examples (outcomes keyed by example index), or None when
    they share no example."""
    from sqlcopilot_core.evaluation import paired_difference

    shared = sorted(set(before) & set(after))
    if not shared:
        return None
    diff = paired_difference([before[k] for k in shared], [after[k] for k in shared])
    return Comparison(reference, sum(before[k] for k in shared) / len(shared),
                      sum(after[k] for k in shared) / len(shared), diff["ci"])


def regression_messages(comparisons: list[Comparison], tolerance: float) -> list[str]:
    return [f"{c.message()}, more than the tolerance {tolerance}" for c in comparisons if c.regressed(tolerance)]


def comparison_markdown(title: str, comparisons: list[Comparison], tolerance: float,
                        nightly: dict[str, Any], registered: dict[str, str]) -> str:
    """A Markdown report: ex against each reference (judged), then the other metrics against registration."""
    lines = [f"# {title}", "", f"Tolerance on ex: {tolerance}; a drop is a regression only when the 95% interval "
             f"of the change lies below zero.", "",
             "| reference | reference ex | nightly ex | change | 95% interval | status |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        status = "REGRESSION" if c.regressed(tolerance) else "ok"
        interval = "-" if c.change_interval is None else f"{c.change_interval[0]:+.4f} to {c.change_interval[1]:+.4f}"
        lines.append(f"| {c.reference} | {c.reference_ex:.4f} | {c.nightly_ex:.4f} | {c.change:+.4f} | {interval} "
                     f"| {status} |")
    if not comparisons:
        lines.append("| (no reference) | | | | | |")
    lines += ["", "| metric | registered | nightly |", "|---|---|---|"]
    for name in SCORE_TAGS:
        lines.append(f"| {name} | {shown(registered.get(name))} | {shown(nightly.get(name))} |")
    return "\n".join(lines) + "\n"


def shown(value: Any) -> str:
    """A number as a table cell (6 significant digits), '-' when absent."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{number:.6g}" if math.isfinite(number) else "-"


def main(argv: list[str]) -> None:
    name = argv[0] if argv else MODEL_NAME
    version = get_version(name, argv[1] if len(argv) > 1 else CHAMPION)
    print(json.dumps({"name": version.name, "version": version.version, "aliases": list(version.aliases),
                      "tags": dict(version.tags), "artifact": str(version_artifact(version).path)}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
