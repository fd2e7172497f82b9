"""Stage build: the C++ runner compiled against the installed libtorch, tested with ctest, and scored through it.

What it compiles is earned: the distilled student only when its execution accuracy keeps at least
`retention_floor` of the fine-tuned teacher's (`ship_decision`), else the teacher itself.

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
from sqlcopilot_core.config import ConfigError
from sqlcopilot_core.copilot import EXPORT_SUBDIR
from sqlcopilot_core.report import retention

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
    retention_floor: float = 0.9
    """The distilled student is exported, compiled and registered only when its ex is at least this fraction of the
    fine-tuned teacher's (student ex / teacher ex); otherwise the teacher is. 0 always ships the student; above 1
    always ships the teacher."""

    def __post_init__(self):
        if not (isinstance(self.retention_floor, (int, float)) and not isinstance(self.retention_floor, bool)
                and self.retention_floor >= 0):
            raise ConfigError(f"BuildConfig.retention_floor: {self.retention_floor!r} must be a number >= 0 "
                              f"(the fraction of the teacher's ex the student must keep to be shipped)")


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


def ship_decision(config: BuildConfig, student_metrics: dict[str, Any], teacher_metrics: dict[str, Any]
                  ) -> dict[str, Any]:
    """Which model the build compiles: 'student' when its ex retention meets config.retention_floor, else
    'teacher'; with the figures and a one-line reason (for the flow's summary, MLflow and the registry)."""
    for role, metrics in (("student", student_metrics), ("teacher", teacher_metrics)):
        if "ex" not in metrics:
            raise ValueError(f"build: the {role} has no execution accuracy (ex) among {sorted(metrics)}; score it "
                             f"before deciding what to ship")
    student_ex, teacher_ex = float(student_metrics["ex"]), float(teacher_metrics["ex"])
    kept = retention(student_ex, teacher_ex)
    shipped = "student" if kept >= config.retention_floor else "teacher"
    verdict = "meets" if shipped == "student" else "is below"
    reason = (f"{shipped} shipped: student ex {student_ex:.4f} / teacher ex {teacher_ex:.4f} = retention "
              f"{kept:.3f}, which {verdict} the floor {config.retention_floor}")
    return {"shipped": shipped, "retention": kept, "retention_floor": config.retention_floor,
            "student_ex": student_ex, "teacher_ex": teacher_ex, "reason": reason}
