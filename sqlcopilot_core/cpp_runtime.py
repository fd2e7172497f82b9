"""Python client of the C++ runner: one `sqlcopilot-runner` process kept alive, fed JSON lines.

    python -m sqlcopilot_core.cpp_runtime work/build/cpp/sqlcopilot-runner work/export 1 2 3
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path


class RunnerError(RuntimeError):
    """The runner process failed to start, died, or refused a request; the message carries its reason."""


class CppRunner:
    """`with CppRunner(runner, export_dir) as r: r.generate([[1, 2, 3]], 16)` -> [(new_ids, timings)]."""

    def __init__(self, runner_path: str | Path, model_dir: str | Path, threads: int | None = None,
                 env: dict[str, str] | None = None, decode: str = "auto"):
        """`threads`: intra-op threads (default one per core); `decode`: "kernel" (hand-written kernels, needs
        AVX-512), "graph" (the graph's decode_step) or "auto" (kernel where the CPU can); `env`: extra environment
        for the runner, e.g.
        {"OMP_WAIT_POLICY": "PASSIVE"} on a machine shared with other work, where spinning OpenMP threads of a
        2-thread runner wait on each other and decoding slows ~20x."""
        self.runner_path, self.model_dir = Path(runner_path), Path(model_dir)
        if not self.runner_path.is_file():
            raise RunnerError(f"{self.runner_path}: runner program not found; run the build stage")
        self.command = [str(self.runner_path), "--model", str(self.model_dir)]
        if threads:
            self.command += ["--threads", str(threads)]
        if decode != "auto":
            self.command += ["--decode", decode]
        self.env = {**os.environ, **env} if env else None
        self.process: subprocess.Popen | None = None
        self._stderr: deque[str] = deque(maxlen=50)
        self._next_id = 0

    def __enter__(self) -> "CppRunner":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1, env=self.env)
        # stderr is drained on a thread so a chatty runner can never block on a full pipe.
        self._stderr_reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_reader.start()

    def close(self) -> None:
        if self.process is None:
            return
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def generate(self, ids_list: list[list[int]], max_new_tokens: int, return_logits: bool = False,
                 stop_at_eos: bool = True) -> list[tuple[list[int], dict]]:
        """Greedy new tokens per prompt, with timings {prefill_ms, decode_ms, new_tokens, decode} (and
        first_logits, step_logits: the logits the first and second tokens were chosen from). stop_at_eos=False
        decodes exactly max_new_tokens tokens (how decode speed is measured)."""
        return [self._request(list(map(int, ids)), max_new_tokens, return_logits, stop_at_eos) for ids in ids_list]

    def _request(self, ids: list[int], max_new_tokens: int, return_logits: bool,
                 stop_at_eos: bool = True) -> tuple[list[int], dict]:
        if self.process is None:
            raise RunnerError("CppRunner is not started (use it as a context manager)")
        self._next_id += 1
        request = {"id": self._next_id, "input_ids": ids, "max_new_tokens": max_new_tokens,
                   "return_logits": return_logits, "stop_at_eos": stop_at_eos}
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.process.wait(timeout=10)
            self._stderr_reader.join(timeout=5)
            raise RunnerError(f"{self.runner_path} exited with code {self.process.returncode}: "
                              + " | ".join(self._stderr))
        reply = json.loads(line)
        if "error" in reply:
            raise RunnerError(f"runner refused request {self._next_id}: {reply['error']}")
        timings = {key: reply[key] for key in ("prefill_ms", "decode_ms", "new_tokens", "decode")}
        if return_logits:
            timings["first_logits"], timings["step_logits"] = reply["first_logits"], reply["step_logits"]
        return reply["output_ids"], timings

    def _drain_stderr(self) -> None:
        process = self.process
        for line in process.stderr:
            self._stderr.append(line.rstrip())


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: python -m sqlcopilot_core.cpp_runtime RUNNER EXPORT_DIR TOKEN_ID...")
    with CppRunner(sys.argv[1], sys.argv[2]) as runner:
        print(runner.generate([[int(t) for t in sys.argv[3:]]], 16))
