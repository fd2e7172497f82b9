"""Spider-style execution accuracy: run gold and predicted SQL read-only and compare their results.

    python -m sqlcopilot_core.evaluation ../shared/spider dev      # scores the gold queries against themselves

Two results match with the semantics of Spider's test-suite evaluation (taoyds/test-suite-sql-eval, result_eq):
- rows are compared as multisets ([1, 1] differs from [1]); their order matters only when the gold query has an
  ORDER BY at its outermost level (outside every parenthesis, so also one that orders a UNION);
- columns may come in any order: a column permutation that makes the results equal is searched for, pairing columns
  whose value multisets are equal (at most MAX_COLUMN_PERMUTATIONS are tried);
- two empty results match, whatever their columns; otherwise the column counts must agree;
- NULL equals NULL; an integral float equals the integer (1 == 1.0); other floats are equal when they agree to
  FLOAT_DIGITS significant digits (both are rounded: unlike math.isclose this is transitive, which a multiset
  comparison needs; it absorbs the ~1e-15 noise of a different summation order).
Unlike the test-suite script, DISTINCT is kept in both queries and nothing is rewritten before running them.

A prediction is wrong when it fails (error kinds of sqlexec, plus "empty": nothing but whitespace, comments and
semicolons, which SQLite would run as nothing and so "match" every empty gold result). Its row cap is `max_rows`,
raised to the gold row count when the gold query returns more, so a correct prediction is never cut off; the gold
query itself runs with a cap of GOLD_MAX_ROWS. A failing gold query makes the example count as not matched, flagged
in `gold_error` and counted in `gold_errors`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tqdm import tqdm

from sqlcopilot_core import sqlpool
from sqlcopilot_core.hardness import HARDNESS_LEVELS, example_hardness, has_outer_order_by
from sqlcopilot_core.spider import Example
from sqlcopilot_core.sqlexec import ERROR_KINDS, ExecResult, execute_readonly, has_statement

FLOAT_DIGITS = 9
MAX_COLUMN_PERMUTATIONS = 10_000
GOLD_MAX_ROWS = 1_000_000
PREDICTION_ERROR_KINDS = ("empty",) + ERROR_KINDS


class PredictionFileError(ValueError):
    """A predictions file does not fit the examples; the message names the file and the line."""


@dataclass(frozen=True)
class MatchResult:
    """Whether a prediction's result equals the gold result, and why not when it failed to run."""

    match: bool
    error_kind: str | None = None
    error: str | None = None
    gold_error: str | None = None


# ---- comparing results ----

def comparable(value):
    """A hashable stand-in for a SQLite value under the float and int rules of the module docstring."""
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return float(f"{value:.{FLOAT_DIGITS}g}")
    return value


def column_permutations(gold_columns: list[tuple], pred_columns: list[tuple], order_matters: bool) -> Iterator[list]:
    """Orders of the predicted columns that could make them equal to the gold columns, identity first.

    A predicted column can stand at a gold position only if it holds the same values (the same sequence when order
    matters, else the same multiset); of several identical predicted columns only one is tried at a position.
    """
    def signature(column: tuple):
        return column if order_matters else Counter(column)

    gold_signatures = [signature(column) for column in gold_columns]
    pred_signatures = [signature(column) for column in pred_columns]
    candidates = [[j for j, pred in enumerate(pred_signatures) if pred == gold] for gold in gold_signatures]

    def extend(chosen: list[int]) -> Iterator[list]:
        if len(chosen) == len(candidates):
            yield list(chosen)
            return
        tried: set = set()
        for j in candidates[len(chosen)]:
            if j in chosen or pred_columns[j] in tried:
                continue
            tried.add(pred_columns[j])
            yield from extend(chosen + [j])

    return extend([])


def results_equal(gold_rows, pred_rows, order_matters: bool) -> bool:
    """Spider test-suite result equality (see the module docstring) of two lists of row tuples."""
    if not gold_rows and not pred_rows:
        return True
    if len(gold_rows) != len(pred_rows) or len(gold_rows[0]) != len(pred_rows[0]):
        return False
    gold = [tuple(comparable(v) for v in row) for row in gold_rows]
    pred = [tuple(comparable(v) for v in row) for row in pred_rows]
    gold_counts = None if order_matters else Counter(gold)
    permutations = column_permutations(list(zip(*gold)), list(zip(*pred)), order_matters)
    for tried, permutation in enumerate(permutations):
        if tried >= MAX_COLUMN_PERMUTATIONS:
            return False
        permuted = [tuple(row[j] for j in permutation) for row in pred]
        if (permuted == gold) if order_matters else (Counter(permuted) == gold_counts):
            return True
    return False


# ---- matching one example ----

def run_gold(db_path: Path, gold_sql: str, timeout_s: float, max_rows: int) -> ExecResult:
    return execute_readonly(db_path, gold_sql, timeout_s=timeout_s, max_rows=max(max_rows, GOLD_MAX_ROWS))


def match_against_gold(db_path: Path, gold_sql: str, gold: ExecResult, pred_sql: str, timeout_s: float,
                       max_rows: int) -> MatchResult:
    """Run the prediction and compare it with an already executed gold query."""
    gold_error = None if gold.ok else f"{gold.error_kind}: {gold.error}"
    if not has_statement(pred_sql):
        return MatchResult(False, "empty", "no SQL statement in the prediction", gold_error)
    pred_cap = max(max_rows, len(gold.rows or ()))
    pred = execute_readonly(db_path, pred_sql, timeout_s=timeout_s, max_rows=pred_cap)
    if not pred.ok:
        return MatchResult(False, pred.error_kind, pred.error, gold_error)
    if gold_error is not None:
        return MatchResult(False, None, None, gold_error)
    return MatchResult(results_equal(gold.rows, pred.rows, has_outer_order_by(gold_sql)))


def execution_match(db_path: str | Path, gold_sql: str, pred_sql: str, timeout_s: float = 5.0,
                    max_rows: int = 10000) -> MatchResult:
    """Whether `pred_sql` returns the same result as `gold_sql` on the database at `db_path`."""
    gold = run_gold(Path(db_path), gold_sql, timeout_s, max_rows)
    return match_against_gold(Path(db_path), gold_sql, gold, pred_sql, timeout_s, max_rows)


# ---- scoring a split ----

def score_predictions(examples: list[Example], predictions: list[str], *, timeout_s: float = 5.0,
                      max_rows: int = 10000, progress: bool = True) -> dict:
    """Execution accuracy of `predictions` (aligned with `examples`): overall, per hardness, per database, errors."""
    if len(examples) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")

    # Spider lists paraphrases of one question next to each other: a small cache runs each gold query once.
    @lru_cache(maxsize=32)
    def gold_result(db_path: Path, gold_sql: str) -> ExecResult:
        return run_gold(db_path, gold_sql, timeout_s, max_rows)

    per_example = []
    pairs = tqdm(zip(examples, predictions), total=len(examples), disable=not progress, desc="execution accuracy",
                 unit="query")
    for example, pred in pairs:
        result = match_against_gold(example.db_path, example.query, gold_result(example.db_path, example.query),
                                    pred, timeout_s, max_rows)
        per_example.append({"index": example.index, "db_id": example.db_id, "question": example.question,
                            "gold": example.query, "pred": pred, "match": result.match,
                            "error_kind": result.error_kind, "error": result.error, "gold_error": result.gold_error,
                            "hardness": example_hardness(example)})
    return summarize(per_example, timeout_s=timeout_s, max_rows=max_rows)


def accuracy(rows: list[dict]) -> dict:
    correct = sum(row["match"] for row in rows)
    return {"ex": correct / len(rows) if rows else None, "n": len(rows), "correct": correct}


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: unlike p +/- z*sqrt(p(1-p)/n) it stays within [0, 1] and is
    honest at 0 or n correct answers (Brown, Cai and DasGupta 2001)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(before: list[bool], after: list[bool], z: float = 1.96) -> dict:
    """Change of accuracy between two scorings of the same examples, with its 95% interval (paired: only the
    examples whose outcome changed carry information; normal approximation of the mean of per-example
    differences). `real_drop` is True when the whole interval lies below zero."""
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_difference: {len(before)} and {len(after)} outcomes; need equal, non-zero counts")
    diffs = [int(b) - int(a) for a, b in zip(before, after)]
    n = len(diffs)
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / max(1, n - 1)
    half = z * math.sqrt(variance / n)
    return {"n": n, "delta": mean, "ci": (mean - half, mean + half), "gained": diffs.count(1),
            "lost": diffs.count(-1), "real_drop": mean + half < 0}


def summarize(per_example: list[dict], *, timeout_s: float, max_rows: int) -> dict:
    """The summary dict of score_predictions from its per-example records."""
    errors = Counter(row["error_kind"] for row in per_example if row["error_kind"])
    by_db = {db_id: accuracy([row for row in per_example if row["db_id"] == db_id])
             for db_id in sorted({row["db_id"] for row in per_example})}
    by_hardness = {level: accuracy([row for row in per_example if row["hardness"] == level])
                   for level in HARDNESS_LEVELS}
    overall = accuracy(per_example)
    return {"ex": overall["ex"] if per_example else 0.0, "n": overall["n"], "correct": overall["correct"],
            "ex_ci": wilson_interval(overall["correct"], overall["n"]),
            "by_hardness": by_hardness, "by_db": by_db,
            "errors": {kind: errors.get(kind, 0) for kind in PREDICTION_ERROR_KINDS},
            "gold_errors": sum(1 for row in per_example if row["gold_error"]),
            "timeout_s": timeout_s, "max_rows": max_rows, "per_example": per_example}


# ---- predictions in, summaries out ----

def read_predictions(path: str | Path, examples: list[Example]) -> list[str]:
    """Predictions aligned with `examples`, from JSON lines ({"db_id", "question", "pred"}) or Spider's format.

    The first non-empty line decides: a line starting with '{' means JSON lines, else one SQL per line, optionally
    followed by a tab and the db_id (as in Spider's gold files). Blank lines are skipped in both, as Spider's
    evaluation.py does, so an empty prediction can only be written as JSON ({"pred": ""}).
    """
    path = Path(path)
    lines = [(number, line) for number, line in enumerate(read_text_file(path).splitlines(), 1) if line.strip()]
    is_jsonl = bool(lines) and lines[0][1].lstrip().startswith("{")
    reader = prediction_from_json_line if is_jsonl else prediction_from_text_line
    if len(lines) != len(examples):
        file_format = "JSON lines" if is_jsonl else "one SQL per line"
        raise PredictionFileError(f"{path}: {len(lines)} predictions ({file_format}) for {len(examples)} examples; "
                                  f"the counts must be equal")
    return [reader(path, number, line, example) for (number, line), example in zip(lines, examples)]


def read_text_file(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped); PredictionFileError naming the file, and the line of
    the first byte that is not UTF-8, for anything else."""
    if not path.is_file():
        raise PredictionFileError(f"{path}: {'is a folder' if path.is_dir() else 'does not exist'}; "
                                  f"expected a predictions file")
    data = path.read_bytes()
    if b"\0" in data:
        raise PredictionFileError(f"{path}: a binary file (it holds NUL bytes), not a predictions file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PredictionFileError(f"{path} line {line}: not UTF-8 (byte {data[exc.start]:#04x} at offset "
                                  f"{exc.start}); save the file as UTF-8") from None


def prediction_from_json_line(path: Path, number: int, line: str, example: Example) -> str:
    """The "pred" of one JSON line, checking its db_id and question (when given) against the example."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PredictionFileError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("pred"), str):
        raise PredictionFileError(f"{path} line {number}: expected an object with a string field 'pred'")
    for name, expected in (("db_id", example.db_id), ("question", example.question)):
        if name in record and str(record[name]).strip() != expected.strip():
            raise PredictionFileError(f"{path} line {number}: {name} {record[name]!r} does not match example "
                                      f"{example.index} ({name} {expected!r}); predictions must follow the "
                                      f"examples' order")
    return record["pred"]


def prediction_from_text_line(path: Path, number: int, line: str, example: Example) -> str:
    """The SQL of one line in Spider's format, checking the optional tab-separated db_id against the example."""
    sql, _, db_id = line.strip().partition("\t")
    if db_id.strip() and db_id.strip() != example.db_id:
        raise PredictionFileError(f"{path} line {number}: db_id {db_id.strip()!r} does not match example "
                                  f"{example.index} (db_id {example.db_id!r})")
    return sql.strip()


def format_summary_table(summary: dict) -> str:
    """An aligned plain-text table of a score_predictions summary: overall, per hardness, per database, errors."""
    def percent(value, decimals: int = 1) -> str:
        return "-" if value is None else f"{100 * value:.{decimals}f}"

    width = max([len("all")] + [len(name) for name in summary["by_db"]]) + 2
    low, high = summary.get("ex_ci", (None, None))
    lines = [f"execution accuracy {percent(summary['ex'], 2)}% ({summary['correct']}/{summary['n']}, 95% interval "
             f"{percent(low)}-{percent(high)}%)"
             f"   gold errors: {summary['gold_errors']}", "",
             f"{'hardness':<{width}}{'n':>6}{'ex %':>8}"]
    for level, row in summary["by_hardness"].items():
        lines.append(f"{level:<{width}}{row['n']:>6}{percent(row['ex']):>8}")
    lines.append(f"{'all':<{width}}{summary['n']:>6}{percent(summary['ex']):>8}")
    lines += ["", f"{'database':<{width}}{'n':>6}{'ex %':>8}"]
    for db_id, row in summary["by_db"].items():
        lines.append(f"{db_id:<{width}}{row['n']:>6}{percent(row['ex']):>8}")
    lines += ["", f"{'prediction errors':<{width}}{'n':>6}"]
    for kind, count in summary["errors"].items():
        lines.append(f"{kind:<{width}}{count:>6}")
    return "\n".join(lines)


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create `out_dir` (a folder for summary.json and predictions_scored.jsonl), or say why it cannot be one; called
    before scoring, so that no work is lost to a bad path."""
    out_dir = Path(out_dir)
    for folder in [out_dir, *out_dir.parents]:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is an existing file; the output must be a folder")
        if folder.exists():
            break
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"{out_dir}: the folder is not writable")
    return out_dir


def write_summary(summary: dict, out_dir: str | Path) -> Path:
    """Write out_dir/summary.json (without the per-example records) and out_dir/predictions_scored.jsonl.

    A prediction may hold text that is not valid Unicode (a lone surrogate from a JSON escape): it is written as the
    same JSON escape (backslashreplace), so every line is written and reads back to the same string."""
    out_dir = prepare_output_dir(out_dir)
    totals = {key: value for key, value in summary.items() if key != "per_example"}
    (out_dir / "summary.json").write_text(json.dumps(totals, indent=2) + "\n", encoding="utf-8")
    with open(out_dir / "predictions_scored.jsonl", "w", encoding="utf-8", errors="backslashreplace") as scored:
        for record in summary["per_example"]:
            scored.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out_dir / "summary.json"


def main(argv: list[str]) -> int:
    from sqlcopilot_core.spider import load_split

    if len(argv) not in (1, 2):
        print("usage: python -m sqlcopilot_core.evaluation SPIDER_DIR [SPLIT]", file=sys.stderr)
        return 2
    sqlpool.prestart()  # the query worker starts while the split is read
    examples = load_split(argv[0], argv[1] if len(argv) == 2 else "dev")
    start = time.monotonic()
    summary = score_predictions(examples, [example.query for example in examples])
    print(format_summary_table(summary))
    print(f"\ngold against itself: {len(examples)} examples in {time.monotonic() - start:.1f} s")
    for row in summary["per_example"]:
        if not row["match"]:
            print(f"  #{row['index']} {row['db_id']}: {row['error_kind'] or row['gold_error'] or 'mismatch'}: "
                  f"{row['gold']}")
    return 0 if summary["ex"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
