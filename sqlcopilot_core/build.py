"""Build stage core: configure and compile the C++ runner in cpp/ against the installed libtorch, optionally test it.

    python -m sqlcopilot_core.build cpp work/build/cpp --test
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RUNNER_NAME = "sqlcopilot-runner"
TEST_NAME = "sqlcopilot_runner_test"
SOURCE_SUFFIXES = {".cpp", ".h", ".hpp", ".txt", ".cmake"}
CXX_COMPILERS = ("c++", "g++", "clang++")


class BuildError(RuntimeError):
    """A tool is missing or cmake/ctest failed; the message says which and points at the log."""


def source_hash(cpp_dir: str | Path) -> str:
    """sha256 over every source file of the C++ project (path and content) and the torch version it links."""
    import torch

    cpp_dir = Path(cpp_dir)
    digest = hashlib.sha256(f"torch {torch.__version__}\n".encode())
    for path in sorted(p for p in cpp_dir.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES):
        digest.update(str(path.relative_to(cpp_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_runner(source_dir: str | Path, build_dir: str | Path, build_type: str = "Release",
                 run_tests: bool = False, test_env: dict[str, str] | None = None, jobs: int | None = None) -> dict:
    """cmake configure + build (+ ctest when `run_tests`, with `test_env` added to its environment).

    Output streams to stdout as it comes and is kept in <build_dir>/build.log. Returns the runner and test
    program paths, the build type, the source hash and the seconds taken.
    """
    import torch

    source_dir, build_dir = Path(source_dir).resolve(), Path(build_dir).resolve()
    if not (source_dir / "CMakeLists.txt").is_file():
        raise BuildError(f"{source_dir}: no CMakeLists.txt (expected the project's cpp/ folder)")
    cmake, ctest, compiler = _required_tools()
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = build_dir / "build.log"
    started = time.monotonic()
    # A configured folder keeps its generator (cmake refuses a change); a new one uses Ninja when present.
    fresh = not (build_dir / "CMakeCache.txt").exists()
    generator = ["-G", "Ninja"] if fresh and shutil.which("ninja") else []
    with log_path.open("w") as log:
        _run([cmake, "-S", str(source_dir), "-B", str(build_dir), *generator, f"-DCMAKE_BUILD_TYPE={build_type}",
              f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", f"-DCMAKE_CXX_COMPILER={compiler}"],
             log, "cmake configure")
        _run([cmake, "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)], log, "cmake build")
        if run_tests:
            env = {**os.environ, **(test_env or {})}
            _run([ctest, "--test-dir", str(build_dir), "--output-on-failure"], log, "ctest", env)
    runner, test_program = build_dir / RUNNER_NAME, build_dir / TEST_NAME
    if not runner.is_file():
        raise BuildError(f"{runner}: cmake finished but the runner was not produced; see {log_path}")
    return {"runner": str(runner), "test_program": str(test_program), "build_dir": str(build_dir),
            "build_type": build_type, "source_hash": source_hash(source_dir), "torch_version": torch.__version__,
            "tests_run": run_tests, "seconds": round(time.monotonic() - started, 1), "log": str(log_path)}


def _required_tools() -> tuple[str, str, str]:
    """cmake, ctest and a C++ compiler ($CXX first), or a BuildError saying what to install."""
    cmake, ctest = shutil.which("cmake"), shutil.which("ctest")
    if not cmake or not ctest:
        raise BuildError("cmake (with ctest) is not on PATH; install it (e.g. `apt-get install cmake` or "
                         "`pip install cmake`) and re-run the build stage")
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else list(CXX_COMPILERS)
    compiler = next((shutil.which(name) for name in candidates if shutil.which(name)), None)
    if not compiler:
        raise BuildError(f"no C++ compiler found (looked for {', '.join(candidates)}); install one (e.g. "
                         "`apt-get install g++`) and re-run the build stage")
    return cmake, ctest, compiler


def _run(command: list[str], log, step: str, env: dict[str, str] | None = None) -> None:
    """Run one step, echoing every output line to stdout and the log; a failure names the step and the log."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    for line in process.stdout:
        sys.stdout.write(f"[{step}] {line}")
        sys.stdout.flush()
        log.write(line)
        tail = (tail + [line.rstrip()])[-15:]
    if process.wait() != 0:
        log.flush()
        raise BuildError(f"{step} failed (exit {process.returncode}); full output in {log.name}; last lines:\n"
                         + "\n".join(tail))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m sqlcopilot_core.build CPP_DIR BUILD_DIR [--test]")
    print(build_runner(sys.argv[1], sys.argv[2], run_tests="--test" in sys.argv[3:]))
