"""Run one SQL query on a SQLite database read-only, with a wall-clock limit and a row cap; never raises for bad SQL.

    python -m sqlcopilot_core.sqlexec ../shared/spider/database/pets_1/pets_1.sqlite "SELECT count(*) FROM Pets"

Four independent guards keep a database unchanged, so that one missing check is not a hole:
  1. the file is opened through the URI `file:...?mode=ro` (SQLite refuses every write, and never creates the file);
  2. a statement starting with a writing keyword (INSERT, ..., VACUUM, REINDEX) is refused before SQLite sees it
     (VACUUM INTO writes a *new* file even on a read-only connection, and REINDEX reaches no authorizer callback);
  3. an authorizer allows only reading (SELECT, READ, FUNCTION, RECURSIVE and schema-reading pragmas) and denies
     everything else: INSERT/UPDATE/DELETE, CREATE/DROP/ALTER, ATTACH/DETACH, transactions, savepoints, ANALYZE,
     REINDEX, every other pragma (so pragma writes), the pragma_* table functions, and the functions load_extension
     and fts3_tokenizer;
  4. SQLite's own limits: no attached databases, no value longer than MAX_VALUE_BYTES.

The time limit is enforced inside SQLite by a progress handler that interrupts the running statement, so an endless
`WITH RECURSIVE` or a huge cross join returns within about `timeout_s`. More than `max_rows` result rows is an error
("too_many_rows"): `rows` then holds the first `max_rows` rows and `truncated` is True, so a person can still see
them, but a scorer must count the query as failed.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ERROR_KINDS = ("syntax", "unknown_table", "unknown_column", "timeout", "denied", "too_many_rows", "missing_db", "other")
ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
# Pragmas that only describe the schema; every other pragma (and every pragma assignment) is denied.
SCHEMA_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                  "foreign_key_list"}
DENIED_FUNCTIONS = {"load_extension", "fts3_tokenizer"}
# Statement kinds other than SELECT/WITH/VALUES/EXPLAIN/PRAGMA; an unknown first word is left to SQLite's parser
# so that a typo ("SELEC") is reported as a syntax error.
WRITING_KEYWORDS = {"insert", "replace", "update", "delete", "create", "drop", "alter", "attach", "detach", "begin",
                    "commit", "end", "rollback", "savepoint", "release", "analyze", "reindex", "vacuum"}
# Checked every this many SQLite virtual-machine instructions: a Python call per ~1000 steps costs little.
PROGRESS_INTERVAL = 1000
FETCH_CHUNK = 1000
MAX_VALUE_BYTES = 10_000_000
LEADING_NOISE = re.compile(r"(\s+|--[^\n]*(\n|$)|/\*.*?(\*/|$))*", re.DOTALL)


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one query: rows and column names, or an error kind from ERROR_KINDS and its message."""

    rows: tuple[tuple, ...] | None
    columns: tuple[str, ...]
    error_kind: str | None
    error: str | None
    truncated: bool
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.error_kind is None


def classify_error(message: str) -> str:
    """Map a SQLite error message to one of ERROR_KINDS."""
    text = message.lower()
    if "no such table" in text:
        return "unknown_table"
    if "no such column" in text or "ambiguous column" in text:
        return "unknown_column"
    if "syntax error" in text or "incomplete input" in text or "unrecognized token" in text:
        return "syntax"
    if "not authorized" in text or "authorization denied" in text or "readonly database" in text:
        return "denied"
    if "interrupted" in text:
        return "timeout"
    if "unable to open database" in text:
        return "missing_db"
    return "other"


def authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None, trigger: str | None) -> int:
    """SQLite authorizer callback: allow reading only (see the module docstring)."""
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    if action in ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in SCHEMA_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def first_keyword(sql: str) -> str:
    """The first word of `sql` after leading whitespace and comments, lower-cased ('' if there is none)."""
    rest = sql[LEADING_NOISE.match(sql).end():]
    match = re.match(r"[A-Za-z_]+", rest)
    return match.group(0).lower() if match else rest[:1]


def open_readonly(db_path: Path, deadline: float) -> sqlite3.Connection:
    """A read-only connection with the authorizer, limits and a progress handler that stops work at `deadline`."""
    conn = sqlite3.connect(db_path.as_uri() + "?mode=ro", uri=True, isolation_level=None,
                           timeout=max(0.0, deadline - time.monotonic()))
    if hasattr(conn, "enable_load_extension"):  # absent when Python was built without extension loading
        conn.enable_load_extension(False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.set_authorizer(authorize)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_INTERVAL)
    # Some Spider databases hold bytes that are not UTF-8; decoding them leniently keeps such columns comparable.
    conn.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
    return conn


def fetch_capped(cursor: sqlite3.Cursor, max_rows: int) -> tuple[list[tuple], bool]:
    """Up to `max_rows` rows, fetched in chunks, and whether more rows existed."""
    rows: list[tuple] = []
    while len(rows) <= max_rows:
        chunk = cursor.fetchmany(min(FETCH_CHUNK, max_rows + 1 - len(rows)))
        if not chunk:
            break
        rows.extend(chunk)
    return rows[:max_rows], len(rows) > max_rows


def execute_readonly(db_path: str | Path, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10000) -> ExecResult:
    """Run `sql` on the database at `db_path` read-only; errors come back as an ExecResult, never as exceptions."""
    start = time.monotonic()

    def failure(kind: str, message: str) -> ExecResult:
        return ExecResult(None, (), kind, message, False, time.monotonic() - start)

    db_path = Path(db_path).resolve()
    if not db_path.is_file():
        return failure("missing_db", f"database file {db_path} does not exist")
    if not sql.strip():
        return failure("syntax", "empty SQL")
    keyword = first_keyword(sql)
    if keyword in WRITING_KEYWORDS:
        return failure("denied", f"only reading statements may run (SELECT, WITH, VALUES, EXPLAIN, PRAGMA); "
                                 f"this one is {keyword.upper()}")
    deadline = start + timeout_s
    conn = None
    try:
        conn = open_readonly(db_path, deadline)
        cursor = conn.execute(sql)
        rows, more = fetch_capped(cursor, max_rows)
        columns = tuple(d[0] for d in cursor.description or ())
    except (sqlite3.Error, sqlite3.Warning, OverflowError, MemoryError, ValueError) as exc:
        message = str(exc)
        if time.monotonic() > deadline and "interrupted" in message.lower():
            return failure("timeout", f"stopped after the time limit of {timeout_s:g} s")
        if "one statement at a time" in message:
            return failure("denied", "more than one SQL statement: only a single statement may run")
        return failure(classify_error(message), message)
    finally:
        if conn is not None:
            conn.close()
    elapsed = time.monotonic() - start
    if more:
        return ExecResult(tuple(rows), columns, "too_many_rows", f"more than {max_rows} rows", True, elapsed)
    return ExecResult(tuple(rows), columns, None, None, False, elapsed)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sqlcopilot_core.sqlexec DB_PATH SQL", file=sys.stderr)
        return 2
    result = execute_readonly(argv[0], argv[1])
    if not result.ok:
        print(f"{result.error_kind}: {result.error}", file=sys.stderr)
    for row in (result.rows or ())[:20]:
        print(row)
    print(f"{len(result.rows or ())} row(s) in {result.elapsed_s:.3f} s", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
