"""The copilot: questions about a SQLite database answered by the compiled model through the C++ runtime.

The tokenizer stays in Python (as in the original product); token ids go to `sqlcopilot-runner`, which decodes
with the TorchScript graph and its kernels: greedily, or with beams over the shared prompt cache, of which the
most probable candidate that executes in the read-only sandbox is the answer (guided decoding, the default); each
database's schema prefix is computed once for all questions about it. The SQL is executed read-only when asked.

    sqlcopilot ask --model work/artifacts/build/<key> --db shop.sqlite "how many orders are there?" --execute
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlcopilot_core.artifacts import load_artifact
from sqlcopilot_core.prompting import Prompter, PromptSettings, extract_sql, model_prompt_settings

EXPORT_SUBDIR = "model"
# prompts of one database sent to the runner in one request, decoded together (CppRunner.beams_batch)
BATCH_PROMPTS = 64


@dataclass(frozen=True)
class Runtime:
    """An export folder (graph + tokenizer + versioned manifest) and the runner program that executes it."""

    export_dir: Path
    runner: Path


def resolve_runtime(model: str | Path, runner: str | Path | None = None) -> Runtime:
    """A build artifact (runner + its upstream export), an export artifact or a bare export folder."""
    from sqlcopilot_core import paths
    from sqlcopilot_core.export import read_manifest

    model = Path(model)
    if (model / "manifest.json").is_file() and json.loads((model / "manifest.json").read_text()).get("stage") == "build":
        artifact = load_artifact(model)
        export_dir = paths.artifact_store() / "export" / artifact.manifest["upstream"]["export"] / EXPORT_SUBDIR
        found = Path(runner) if runner else model / "bin" / "sqlcopilot-runner"
    else:
        export_dir = model / EXPORT_SUBDIR if (model / EXPORT_SUBDIR / "decoder.pt").exists() else model
        found = Path(runner) if runner else newest_runner()
    # refuses unknown versions, names missing or altered files; the runner checks the graph itself when it loads it
    read_manifest(export_dir, check_graph=False)
    if found is None or not found.is_file():
        raise FileNotFoundError(f"no sqlcopilot-runner for {model}: pass --runner, or run the build stage "
                                f"(sqlcopilot rebuild) so that <store>/build/<key>/bin/sqlcopilot-runner exists")
    return Runtime(export_dir, found)


def newest_runner() -> Path | None:
    from sqlcopilot_core import paths

    runners = sorted((paths.artifact_store() / "build").glob("*/bin/sqlcopilot-runner"),
                     key=lambda p: p.stat().st_mtime)
    return runners[-1] if runners else None


@dataclass(frozen=True)
class Decoding:
    """How the runner answers: greedy, or num_beams beams (beam: the most probable; guided: the most probable that
    executes read-only), optionally schema-constrained; prefix_reuse keeps each database's schema cache."""

    decoding: str = "guided"
    num_beams: int = 4
    constrained: bool = False
    prefer_nonempty: bool = False
    max_new_tokens: int = 128
    prefix_reuse: bool = True
    exec_timeout_s: float = 2.0
    retry_beams: int = 8

    def __post_init__(self):
        from sqlcopilot_core.generate import check_decoding

        check_decoding(self.decoding, self.num_beams, "decoding", self.retry_beams)

    @classmethod
    def of(cls, config, greedy: bool = False) -> "Decoding":
        """From an EvalConfig (the scoring settings); `greedy`: plain greedy whatever it says."""
        if greedy:
            return cls("greedy", max_new_tokens=config.max_new_tokens)
        return cls(config.decoding, config.num_beams, config.constrained, config.prefer_nonempty,
                   config.max_new_tokens, retry_beams=config.retry_beams)


def decode_prompts(runtime: Runtime, tokenizer, prompts: list[tuple[list[int], list[int], Path]], decoding: Decoding,
                   progress: bool = True) -> list[dict[str, Any]]:
    """One answer per (prefix ids, branch ids, database) prompt, through the C++ runner: {"sql", "candidates",
    "tried", "rejected", "error", "prefill_ms", "decode_ms", "prefix_reused", ...}. Prompts are sent grouped by
    prefix; with prefix_reuse the runner computes each database's schema once and decodes the group's questions
    together (`CppRunner.beams_batch`: one decode step advances the beams of several questions), at most
    BATCH_PROMPTS a request. A guided question none of whose candidates runs is decoded once more with
    `retry_beams` beams (its answer then holds "retried": the first search's beams' error and candidates)."""
    from tqdm import tqdm

    from sqlcopilot_core.beams import answer_from_candidates, decode_with_fallback, mark_retried
    from sqlcopilot_core.cpp_runtime import CppRunner
    from sqlcopilot_core.generate import retry_width
    from sqlcopilot_core.sqlconstraint import constraint_spec

    order = sorted(range(len(prompts)), key=lambda i: (tuple(prompts[i][0]), i))
    answers: list[dict[str, Any]] = [{} for _ in prompts]
    width = 1 if decoding.decoding == "greedy" else decoding.num_beams
    guided = decoding.decoding == "guided"
    retry = retry_width(decoding.decoding, width, decoding.retry_beams)
    specs: dict[str, dict] = {}

    def spec(db_path) -> dict | None:
        if not decoding.constrained:
            return None
        if str(db_path) not in specs:
            specs[str(db_path)] = constraint_spec(db_path)
        return specs[str(db_path)]

    def answer(i: int, candidates, timing: dict, note: str | None, beams: int) -> None:
        first = answers[i]
        answers[i] = {**timing, **answer_from_candidates(candidates, tokenizer, prompts[i][2], guided,
                                                          timeout_s=decoding.exec_timeout_s,
                                                          prefer_nonempty=decoding.prefer_nonempty,
                                                          max_new_tokens=decoding.max_new_tokens)}
        if note:
            answers[i]["fallback"] = note
        if beams != width:  # the second search: say why it was made
            mark_retried(answers[i], first, beams, timing)

    def failed(indices: list[int]) -> list[int]:
        """Guided questions none of whose candidates ran: decoded once more with `retry` beams."""
        return [i for i in indices if retry and answers[i].get("error") is not None]

    with CppRunner(runtime.runner, runtime.export_dir) as runner, \
            tqdm(total=len(prompts), desc=f"generate (C++, {decoding.decoding})", unit="prompt",
                 disable=not progress) as bar:
        def decode_one(i: int, prefix_len: int, constrained: bool, beams: int):
            prefix, branch, db_path = prompts[i]
            return runner.beams(list(prefix) + list(branch), beams, decoding.max_new_tokens, prefix_len=prefix_len,
                                stop_at_statement_end=True, constraint=spec(db_path) if constrained else None)

        def prefix_len_of(i: int) -> int:
            # a prompt with no branch (the whole prompt is its schema) keeps no prefix, as one alone would
            return len(prompts[i][0]) if decoding.prefix_reuse and prompts[i][1] else 0

        def decode_chunk(chunk: list[int], beams: int) -> None:
            if not decoding.prefix_reuse:
                for i in chunk:
                    answer(i, *decode_with_fallback(lambda constrained: decode_one(i, 0, constrained, beams),
                                                    decoding.constrained), beams)
                return
            found, _ = runner.beams_batch(
                [(list(prompts[i][0]) + list(prompts[i][1]), prefix_len_of(i)) for i in chunk], beams,
                decoding.max_new_tokens, stop_at_statement_end=True,
                constraints=[spec(prompts[i][2]) for i in chunk])
            for i, result in zip(chunk, found):
                answer(i, *decode_with_fallback(
                    lambda constrained, result=result, i=i:
                    result if constrained == decoding.constrained else decode_one(i, prefix_len_of(i), False, beams),
                    decoding.constrained), beams)

        for _, group in itertools.groupby(order, key=lambda i: tuple(prompts[i][0])):
            group = list(group)
            step = BATCH_PROMPTS if decoding.prefix_reuse else 1
            for start in range(0, len(group), step):
                chunk = group[start:start + step]
                decode_chunk(chunk, width)
                again = failed(chunk)
                if again:
                    decode_chunk(again, retry)
                bar.update(len(chunk))
    return answers


def predict_with_runner(model: Path, examples, config, runner: Path | None = None,
                        prompt: PromptSettings | None = None) -> list[str]:
    """`sqlcopilot predict --runtime cpp`: predictions for Spider examples through the C++ runner."""
    return predict_and_time(resolve_runtime(model, runner), examples, config, prompt)[0]


def predict_and_time(runtime: Runtime, examples, config, prompt: PromptSettings | None = None, greedy: bool = False
                     ) -> tuple[list[str], list[dict[str, Any]]]:
    """Predictions and their answers' details through the runner, decoded as `config` (an EvalConfig) says, with
    the export's own prompt settings unless `prompt` overrides them (with a warning naming what differs)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(runtime.export_dir)
    prompter = Prompter(model_prompt_settings(runtime.export_dir, prompt), tokenizer)
    prompts = [(*prompter.split_ids(e.db_path, e.question), e.db_path) for e in examples]
    answers = decode_prompts(runtime, tokenizer, prompts, Decoding.of(config, greedy))
    return [a["sql"] for a in answers], answers


def ask_many(runtime: Runtime, items: list[tuple[str | Path, str]], *, execute: bool = False,
             prompt: PromptSettings | None = None, timeout_s: float = 5.0, max_rows: int = 50,
             progress: bool = False, **decoding) -> list[dict[str, Any]]:
    """Questions about databases [(db_path, question)]: per question the chosen SQL, how many candidates were
    made and tried (and why the others were rejected) and, with `execute`, its read-only result. Questions about one
    database share its schema prefix (computed once). The prompt is the export's own (prompt.json) unless `prompt`
    overrides it."""
    from transformers import AutoTokenizer

    from sqlcopilot_core.sqlexec import execute_readonly

    for db_path, _ in items:
        if not Path(db_path).is_file():
            raise FileNotFoundError(f"database {db_path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(runtime.export_dir)
    prompter = Prompter(model_prompt_settings(runtime.export_dir, prompt), tokenizer)
    prompts = [(*prompter.split_ids(Path(db), question), Path(db)) for db, question in items]
    started = time.perf_counter()
    decoded = decode_prompts(runtime, tokenizer, prompts, Decoding(**decoding), progress)
    seconds = (time.perf_counter() - started) / max(1, len(items))
    answers = []
    for (db_path, question), answer in zip(items, decoded):
        answer = {"question": question, "db": str(db_path), "seconds": seconds, **answer}
        if execute:
            result = execute_readonly(db_path, answer["sql"], timeout_s=timeout_s, max_rows=max_rows)
            answer.update(columns=result.columns, rows=result.rows, error_kind=result.error_kind,
                          error=result.error, truncated=result.truncated)
        answers.append(answer)
    return answers


def ask(runtime: Runtime, db_path: str | Path, question: str, *, execute: bool = False,
        max_new_tokens: int = 128, prompt: PromptSettings | None = None, timeout_s: float = 5.0,
        max_rows: int = 50, **decoding) -> dict[str, Any]:
    """One question about one database (see ask_many); decoding settings as Decoding's fields (default guided)."""
    return ask_many(runtime, [(db_path, question)], execute=execute, prompt=prompt, timeout_s=timeout_s,
                    max_rows=max_rows, max_new_tokens=max_new_tokens, **decoding)[0]


def format_table(columns, rows) -> str:
    """Rows as an aligned plain-text table."""
    columns = list(columns or [])
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows or []]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])
