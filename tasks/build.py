"""Task build: the C++ runner compiled against the installed libtorch, tested with ctest, and scored through it.

The cmake build folder is kept per source hash and torch version (work/build/cpp-<hash>), so building again for
another model is incremental; the artifact holds the runner program and is scored on its export.

    python -m pytest tests/cpp -q
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import paths
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.build import RUNNER_NAME, build_runner, source_hash
from sqlcopilot_core.copilot import EXPORT_SUBDIR
from tasks.evaluate import cpp_scorer
from tasks.stage import run_stage

CPP_DIR = Path(__file__).resolve().parents[1] / "cpp"
MODULES = ("build", "copilot", "cpp_runtime")


@task(name="build", cache_policy=NO_CACHE)
def build(settings: dict[str, Any], exported: Artifact, eval_settings: dict[str, Any],
          parent_run_id: str | None = None) -> Artifact:
    """The runner program for `exported`, with the C++ path's execution accuracy."""
    build_type = settings.get("build_type", "Release")
    sources = source_hash(CPP_DIR)
    config = {"build_type": build_type, "source_hash": sources, "run_tests": bool(settings.get("run_tests", True))}
    export_dir = exported.path / EXPORT_SUBDIR

    def produce(staging: Path, checkpoints: Path, run_id: str) -> dict[str, Any]:
        build_dir = paths.build_dir() / f"cpp-{sources[:16]}-{build_type.lower()}"
        info = build_runner(CPP_DIR, build_dir, build_type, run_tests=config["run_tests"],
                            test_env={"SQLCOPILOT_TEST_EXPORT": str(export_dir)})
        (staging / "bin").mkdir()
        shutil.copy2(info["runner"], staging / "bin" / RUNNER_NAME)
        return {"build_seconds": info["seconds"]}

    return run_stage("build", config, {"export": exported}, MODULES, produce, parent_run_id,
                     score=cpp_scorer(eval_settings, export_dir, exported.metrics.get("params", 0)), eval_config=eval_settings)
