"""Stage build: the C++ runner compiled against the installed libtorch, tested with ctest, and scored through it.

The C++ sources are part of its key by content (source hash, with the torch version); the cmake build folder is kept
per source hash (work/build/cpp-<hash>), so building again for another model is incremental.

    python -m pytest tests/cpp -q
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlcopilot_core import paths
from sqlcopilot_core.build import RUNNER_NAME, build_runner, source_hash
from sqlcopilot_core.copilot import EXPORT_SUBDIR

CPP_DIR = Path(__file__).resolve().parents[2] / "cpp"
NAME = "build"
SCORE = "cpp"
READS_SPIDER = False


@dataclass(frozen=True)
class BuildConfig:
    """How the runner is compiled."""

    build_type: str = "Release"
    """CMake build type."""
    run_tests: bool = True
    """Run the C++ tests (ctest) against the upstream export before the artifact is committed."""


CONFIG = BuildConfig


def reads(config: BuildConfig, spider_dir: Path | None, evaluation) -> dict[str, Any]:
    return {"cpp_sources": source_hash(CPP_DIR)}


def produce(config: BuildConfig, inputs, staging: Path, checkpoints: Path, run) -> dict[str, Any]:
    export_dir = inputs.upstream["export"].path / EXPORT_SUBDIR
    build_dir = paths.build_dir() / f"cpp-{inputs.data['cpp_sources'][:16]}-{config.build_type.lower()}"
    info = build_runner(CPP_DIR, build_dir, config.build_type, run_tests=config.run_tests,
                        test_env={"SQLCOPILOT_TEST_EXPORT": str(export_dir)})
    (staging / "bin").mkdir()
    shutil.copy2(info["runner"], staging / "bin" / RUNNER_NAME)
    return {"build_seconds": info["seconds"]}
