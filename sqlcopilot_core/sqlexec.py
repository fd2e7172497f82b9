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
  4. SQLite's own limits: no attached databases, and SQLITE_LIMITS (value and SQL length, expression depth, columns,
     compound selects, ...) at values far beyond any Spider query, so a single call cannot build a huge value.

Time and memory are bounded twice. Inside SQLite, a progress handler interrupts the running statement at the time
limit, so an endless `WITH RECURSIVE` or a huge cross join returns within about `timeout_s`. Around it, every query
runs in a pooled worker process (sqlpool) with a memory limit, killed and replaced when it has not answered by the
time limit plus sqlpool.KILL_GRACE_S: that stops work done inside one SQLite call, which never reaches the progress
handler (`printf('%.*c', 2000000000, 'x')`). A result larger than MAX_RESULT_BYTES is an error ("limit"), so the
caller's memory is bounded too. More than `max_rows` result rows is an error ("too_many_rows"): `rows` then holds the
first `max_rows` rows and `truncated` is True, so a person can still see them, but a scorer must count the query as
failed.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from sqlcopilot_core import sqlpool

ERROR_KINDS = ("syntax", "unknown_table", "unknown_column", "timeout", "limit", "denied", "too_many_rows", "missing_db",
               "other")
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
MAX_SQL_CHARS = 100_000
MAX_RESULT_BYTES = 128 << 20
"""Size of a result (text and blob bytes, plus ROW_BYTES per row and VALUE_BYTES per value) beyond which it is an
error."""
ROW_BYTES, VALUE_BYTES = 64, 16
# Each far beyond what any Spider gold query needs (all of dev and train run under them), far below SQLite's defaults.
SQLITE_LIMITS = {
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_LENGTH: MAX_VALUE_BYTES,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: MAX_SQL_CHARS,
    sqlite3.SQLITE_LIMIT_COLUMN: 500,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 32,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 100,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1000,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 10,
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,
}
# Messages of SQLite (and Python) when one of those limits, or memory, is reached.
LIMIT_MESSAGES = ("too big", "too many", "too large", "too long", "too complex", "out of memory",
                  "must be between")
# A worker keeps this many connections open (opening one and reading its schema costs about a Spider query).
OPEN_CONNECTIONS = 8
_connections: dict[tuple, sqlite3.Connection] = {}
_deadline = [0.0]  # the running query's deadline, read by the progress handler of every connection
LEADING_NOISE = re.compile(r"(\s+|--[^\n]*(\n|$)|/\*.*?(\*/|$))*", re.DOTALL)
NOTHING_TO_RUN = re.compile(r"(\s|;|--[^\n]*(\n|$)|/\*((?!\*/).)*(\*/|$))*", re.DOTALL)


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
    if any(message in text for message in LIMIT_MESSAGES):
        return "limit"
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


def has_statement(sql: str) -> bool:
    """Whether `sql` holds anything but whitespace, comments and semicolons (which SQLite runs as nothing)."""
    return NOTHING_TO_RUN.fullmatch(sql) is None


def first_keyword(sql: str) -> str:
    """The first word of `sql` after leading whitespace and comments, lower-cased ('' if there is none)."""
    rest = sql[LEADING_NOISE.match(sql).end():]
    match = re.match(r"[A-Za-z_]+", rest)
    return match.group(0).lower() if match else rest[:1]


def open_readonly(db_path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A read-only connection with the authorizer, limits and a progress handler that stops work at the deadline."""
    conn = sqlite3.connect(db_path.as_uri() + "?mode=ro", uri=True, isolation_level=None, timeout=busy_timeout_s)
    if hasattr(conn, "enable_load_extension"):  # absent when Python was built without extension loading
        conn.enable_load_extension(False)
    for limit, value in SQLITE_LIMITS.items():
        conn.setlimit(limit, value)
    conn.set_authorizer(authorize)
    conn.set_progress_handler(lambda: int(time.monotonic() > _deadline[0]), PROGRESS_INTERVAL)
    # Some Spider databases hold bytes that are not UTF-8; decoding them leniently keeps such columns comparable.
    conn.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
    return conn


def cached_connection(db_path: Path, busy_timeout_s: float) -> sqlite3.Connection | None:
    """A read-only connection to `db_path`, reused while the file is the same (inode, size, modification time):
    opening one and reading its schema costs as much as a typical Spider query. None when there is no such file."""
    try:
        stat = db_path.stat()
    except OSError:
        return None
    if not S_ISREG(stat.st_mode):
        return None
    key = (str(db_path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    conn = _connections.pop(key, None) or open_readonly(db_path, busy_timeout_s)
    _connections[key] = conn  # the most recently used last
    while len(_connections) > OPEN_CONNECTIONS:
        _connections.pop(next(iter(_connections))).close()
    return conn


def close_connections() -> None:
    while _connections:
        _connections.popitem()[1].close()


class ResultTooLarge(Exception):
    """A result beyond MAX_RESULT_BYTES."""


def result_bytes(rows: list[tuple]) -> int:
    """The size of rows counted against MAX_RESULT_BYTES."""
    return sum(ROW_BYTES + sum(VALUE_BYTES + (len(v) if isinstance(v, (str, bytes)) else 0) for v in row)
               for row in rows)


def fetch_capped(cursor: sqlite3.Cursor, max_rows: int) -> tuple[list[tuple], bool]:
    """Up to `max_rows` rows, fetched in chunks, and whether more rows existed; ResultTooLarge past MAX_RESULT_BYTES."""
    rows: list[tuple] = []
    size = 0
    while len(rows) <= max_rows:
        chunk = cursor.fetchmany(min(FETCH_CHUNK, max_rows + 1 - len(rows)))
        if not chunk:
            break
        size += result_bytes(chunk)
        if size > MAX_RESULT_BYTES:
            raise ResultTooLarge(f"the result is larger than {MAX_RESULT_BYTES} bytes")
        rows.extend(chunk)
    return rows[:max_rows], len(rows) > max_rows


def run_query(db_path: str, sql: str, timeout_s: float, max_rows: int) -> tuple:
    """Run `sql` in this process: (rows, columns, error_kind, error, truncated). Called in a sqlpool worker."""
    deadline = _deadline[0] = time.monotonic() + timeout_s
    cursor, fresh_start = None, False
    try:
        conn = cached_connection(Path(db_path), timeout_s)
        if conn is None:
            return None, (), "missing_db", f"database file {db_path} does not exist", False
        cursor = conn.execute(sql)
        rows, more = fetch_capped(cursor, max_rows)
        columns = tuple(d[0] for d in cursor.description or ())
    except ResultTooLarge as exc:
        return None, (), "limit", str(exc), False
    except (sqlite3.Error, sqlite3.Warning, OverflowError, MemoryError, ValueError) as exc:
        message = str(exc) if not isinstance(exc, MemoryError) else (
            f"out of memory: the query's process may use at most {sqlpool.WORKER_MEMORY_BYTES} bytes")
        # after running out of time or memory, start again from fresh connections
        fresh_start = isinstance(exc, MemoryError) or "interrupted" in message or "memory" in message
        if time.monotonic() > deadline and "interrupted" in message.lower():
            return None, (), "timeout", f"stopped after the time limit of {timeout_s:g} s", False
        if "one statement at a time" in message:
            return None, (), "denied", "more than one SQL statement: only a single statement may run", False
        return None, (), "limit" if isinstance(exc, MemoryError) else classify_error(message), message, False
    finally:
        if cursor is not None:
            cursor.close()  # ends the read transaction of a statement not run to its end
        if fresh_start:
            close_connections()
    if time.monotonic() > deadline:  # one long SQLite call that never reached the progress handler
        return None, (), "timeout", f"stopped after the time limit of {timeout_s:g} s", False
    if more:
        return tuple(rows), columns, "too_many_rows", f"more than {max_rows} rows", True
    return tuple(rows), columns, None, None, False


def answer_request(request: tuple):
    """A sqlpool worker's answer: ('query', db_path, sql, timeout_s, max_rows) -> run_query's tuple;
    ('echo', x) -> x."""
    if request[0] == "echo":
        return request[1]
    return run_query(*request[1:])


def execute_readonly(db_path: str | Path, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10000) -> ExecResult:
    """Run `sql` on the database at `db_path` read-only in a pooled worker process; errors come back as an
    ExecResult, never as exceptions."""
    start = time.monotonic()

    def failure(kind: str, message: str) -> ExecResult:
        return ExecResult(None, (), kind, message, False, time.monotonic() - start)

    db_path = os.path.abspath(db_path)  # the worker checks that the file exists
    if len(sql) > MAX_SQL_CHARS:
        return failure("limit", f"the SQL is {len(sql)} characters long; at most {MAX_SQL_CHARS} may run")
    if not has_statement(sql):
        return failure("syntax", "no SQL statement (only whitespace, comments or semicolons)")
    keyword = first_keyword(sql)
    if keyword in WRITING_KEYWORDS:
        return failure("denied", f"only reading statements may run (SELECT, WITH, VALUES, EXPLAIN, PRAGMA); "
                                 f"this one is {keyword.upper()}")
    try:
        rows, columns, kind, error, truncated = sqlpool.call(
            ("query", db_path, sql, float(timeout_s), int(max_rows)), timeout_s + sqlpool.KILL_GRACE_S)
    except sqlpool.WorkerFailed as exc:
        if exc.kind == "timeout":
            return failure("timeout", f"stopped after the time limit of {timeout_s:g} s (its process was ended)")
        return failure(exc.kind, str(exc))
    return ExecResult(rows, columns, kind, error, truncated, time.monotonic() - start)


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
