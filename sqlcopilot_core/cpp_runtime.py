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
from typing import Iterable

from sqlcopilot_core.beams import Candidate


class RunnerError(RuntimeError):
    """The runner process failed to start, died, or refused a request; the message carries its reason."""


class CppRunner:
    """`with CppRunner(runner, export_dir) as r: r.generate([[1, 2, 3]], 16)` -> [(new_ids, timings)];
    `r.beams([1, 2, 3], 4, 16)` -> ([beams.Candidate, ...] best first, timings)."""

    def __init__(self, runner_path: str | Path, model_dir: str | Path, threads: int | None = None,
                 env: dict[str, str] | None = None, decode: str = "auto", prefix_cache: int | None = None):
        """`threads`: intra-op threads (default one per core); `decode`: "kernel" (hand-written kernels, needs
        AVX-512), "graph" (the graph's decode_step) or "auto" (kernel where the CPU can); `prefix_cache`: how many
        prompt prefixes' caches the runner keeps (its default when None, 0 for none); `env`: extra environment
        for the runner, e.g.
        {"OMP_WAIT_POLICY": "PASSIVE"} on a machine shared with other work, where spinning OpenMP threads of a
        2-thread runner wait on each other and decoding slows ~20x."""
        self.runner_path, self.model_dir = Path(runner_path), Path(model_dir)
        if not self.runner_path.is_file():
            raise RunnerError(f"{self.runner_path}: runner program not found; run the build stage")
        self.command = [str(self.runner_path), "--model", str(self.model_dir)]
        if prefix_cache is not None:
            self.command += ["--prefix-cache", str(prefix_cache)]
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
                 stop_at_eos: bool = True, prefix_len: int = 0, stop_ids: Iterable[int] = (),
                 stop_at_statement_end: bool = False) -> list[tuple[list[int], dict]]:
        """Greedy new tokens per prompt, with timings {prefill_ms, decode_ms, new_tokens, decode, prefix_reused}
        (and first_logits, step_logits: the logits the first and second tokens were chosen from). stop_at_eos=False
        decodes exactly max_new_tokens tokens (how decode speed is measured). `prefix_len`: the first tokens of
        each prompt are a prefix whose cache the runner keeps and reuses (a database's schema). Decoding also ends
        after a token of `stop_ids`, or of the export's statement-end tokens with `stop_at_statement_end`."""
        extra = self._decode_fields(prefix_len, stop_ids, stop_at_statement_end)
        results = []
        for ids in ids_list:
            reply = self._request({"input_ids": list(map(int, ids)), "max_new_tokens": max_new_tokens,
                                   "return_logits": return_logits, "stop_at_eos": stop_at_eos, **extra})
            timings = {key: reply[key] for key in ("prefill_ms", "decode_ms", "new_tokens", "decode", "prefix_reused")}
            if return_logits:
                timings["first_logits"], timings["step_logits"] = reply["first_logits"], reply["step_logits"]
            results.append((reply["output_ids"], timings))
        return results

    def beams(self, ids: list[int], num_beams: int, max_new_tokens: int, prefix_len: int = 0,
              stop_ids: Iterable[int] = (), stop_at_statement_end: bool = False,
              stop_at_eos: bool = True, constraint: dict | None = None) -> tuple[list[Candidate], dict]:
        """Beam candidates after one prompt, best first (sqlcopilot_core.beams' rule), with timings {prefill_ms,
        decode_ms, steps, new_tokens (steps + 1), decode, prefix_reused}; the other arguments as for `generate`. A schema `constraint`
        (sqlconstraint.constraint_spec) is applied by the runner as beams.beam_search applies SchemaConstraint; a
        runner that cannot apply it refuses the request (it never decodes unconstrained instead)."""
        request = {"input_ids": list(map(int, ids)), "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                   "stop_at_eos": stop_at_eos, **self._decode_fields(prefix_len, stop_ids, stop_at_statement_end)}
        if constraint is not None:
            request["constraint"] = constraint
        return self._beams_of(self._request(request))

    def beams_batch(self, prompts: list[tuple[list[int], int]], num_beams: int, max_new_tokens: int,
                    stop_ids: Iterable[int] = (), stop_at_statement_end: bool = False, stop_at_eos: bool = True,
                    constraints: list[dict | None] | None = None) -> tuple[list[tuple[list[Candidate], dict]], float]:
        """Beam candidates of several (ids, prefix_len) prompts, each as `beams` gives them, decoded together by the
        runner: prompts of one prefix (a database's schema) share it and each of the runner's decode steps advances
        the beams of all of them at once. `constraints[i]`: prompt i's schema constraint (or None). Returns the
        per-prompt (candidates, timings) in order and the batch's milliseconds; a prompt's decode_ms is its time from
        start to end, shared with the others."""
        constraints = constraints or [None] * len(prompts)
        items = []
        for (ids, prefix_len), constraint in zip(prompts, constraints, strict=True):
            item = {"input_ids": list(map(int, ids)), "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                    "stop_at_eos": stop_at_eos, **self._decode_fields(prefix_len, stop_ids, stop_at_statement_end)}
            if constraint is not None:
                item["constraint"] = constraint
            items.append(item)
        reply = self._request({"batch": items})
        return [self._beams_of(one) for one in reply["replies"]], reply["batch_ms"]

    @staticmethod
    def _beams_of(reply: dict) -> tuple[list[Candidate], dict]:
        candidates = [Candidate(tuple(beam["output_ids"]), beam["score"]) for beam in reply["beams"]]
        return candidates, {key: reply[key] for key in ("prefill_ms", "decode_ms", "steps", "new_tokens", "decode",
                                                        "prefix_reused")}

    @staticmethod
    def _decode_fields(prefix_len: int, stop_ids: Iterable[int], stop_at_statement_end: bool) -> dict:
        fields: dict = {"prefix_len": prefix_len} if prefix_len else {}
        if stop_ids:
            fields["stop_ids"] = sorted(map(int, stop_ids))
        if stop_at_statement_end:
            fields["stop_at_statement_end"] = True
        return fields

    def _request(self, request: dict) -> dict:
        if self.process is None:
            raise RunnerError("CppRunner is not started (use it as a context manager)")
        self._next_id += 1
        try:
            self.process.stdin.write(json.dumps({"id": self._next_id, **request}) + "\n")
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
        return reply

    def _drain_stderr(self) -> None:
        process = self.process
        for line in process.stderr:
            self._stderr.append(line.rstrip())


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: python -m sqlcopilot_core.cpp_runtime RUNNER EXPORT_DIR TOKEN_ID...")
    with CppRunner(sys.argv[1], sys.argv[2]) as runner:
        print(runner.generate([[int(t) for t in sys.argv[3:]]], 16))
