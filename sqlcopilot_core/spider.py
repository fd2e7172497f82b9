"""Spider data layer: load any folder in the official layout, and serialize a database schema for prompts.

    python -m sqlcopilot_core.spider ../shared/spider dev
"""

from __future__ import annotations

import json
import sqlite3
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_FIELDS = ("question", "query", "db_id")
SPLIT_FILES = {"dev": ("dev.json",), "train": ("train_spider.json", "train_others.json")}


class SpiderFormatError(ValueError):
    """A Spider file is malformed; the message names the file and the position or example."""


@dataclass(frozen=True)
class Example:
    """One question/SQL pair; `sql` is Spider's parsed form when the file carries it (dev.json does)."""

    question: str
    query: str
    db_id: str
    db_path: Path
    index: int
    sql: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[tuple[str, str, str], ...]  # (column, referenced table, referenced column)


@dataclass(frozen=True)
class Schema:
    db_id: str
    tables: tuple[Table, ...]


def database_path(spider_dir: Path, db_id: str) -> Path:
    """Where the official layout keeps a database: database/<db_id>/<db_id>.sqlite."""
    return Path(spider_dir) / "database" / db_id / f"{db_id}.sqlite"


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpiderFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SpiderFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpiderFormatError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def parse_examples(path: Path, spider_dir: Path, start_index: int = 0) -> list[Example]:
    """Examples of one Spider JSON file; every record must have question, query and db_id as strings."""
    records = read_json(path)
    if not isinstance(records, list):
        raise SpiderFormatError(f"{path}: expected a JSON list of examples, got {type(records).__name__}")
    examples = []
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise SpiderFormatError(f"{path}: example {position} is a {type(record).__name__}, not an object")
        for name in REQUIRED_FIELDS:
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise SpiderFormatError(f"{path}: example {position} has no usable '{name}' (a non-empty string)")
        sql = record.get("sql") if isinstance(record.get("sql"), dict) else None
        examples.append(Example(record["question"], record["query"], record["db_id"],
                                database_path(spider_dir, record["db_id"]), start_index + position, sql))
    return examples


def load_split(spider_dir: str | Path, split: str) -> list[Example]:
    """Examples of `split` ('dev' or 'train'; train adds train_others.json when present) whose database exists.

    Examples whose database file is missing are skipped and counted in one warning.
    """
    spider_dir = Path(spider_dir)
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    if not spider_dir.is_dir():
        raise FileNotFoundError(f"Spider folder {spider_dir} does not exist")
    first, *optional = SPLIT_FILES[split]
    examples = parse_examples(spider_dir / first, spider_dir)
    for name in optional:
        if (spider_dir / name).exists():
            examples += parse_examples(spider_dir / name, spider_dir, start_index=len(examples))
    present = [ex for ex in examples if ex.db_path.is_file()]
    missing = sorted({ex.db_id for ex in examples if not ex.db_path.is_file()})
    if missing:
        warnings.warn(f"{spider_dir} {split}: skipped {len(examples) - len(present)} example(s) whose database is "
                      f"missing ({', '.join(missing)})", stacklevel=2)
    return present


def read_schema(db_path: str | Path, db_id: str | None = None) -> Schema:
    """Tables, typed columns, primary and foreign keys of a SQLite file, read read-only, in creation order."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"database {db_path} does not exist")
    with sqlite3.connect(f"file:{db_path.resolve()}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        tables = []
        for name in names:
            info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
            columns = tuple(Column(row[1], (row[2] or "").lower()) for row in info)
            primary = tuple(row[1] for row in sorted(info, key=lambda r: r[5]) if row[5])
            foreign = tuple((row[3], row[2], row[4] or "") for row in
                            conn.execute(f'PRAGMA foreign_key_list("{name}")').fetchall())
            tables.append(Table(name, columns, primary, foreign))
    return Schema(db_id or db_path.stem, tuple(tables))


def sample_values(db_path: Path, table: str, column: str, limit: int) -> list[str]:
    """Up to `limit` distinct non-null values of a column, shortest first then alphabetical: deterministic."""
    with sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True) as conn:
        rows = conn.execute(f'SELECT DISTINCT CAST("{column}" AS TEXT) AS v FROM "{table}" WHERE "{column}" IS NOT '
                            f'NULL AND length(v) <= 40 ORDER BY length(v), v LIMIT ?', (limit,)).fetchall()
    return [r[0] for r in rows]


def table_lines(table: Table, values: dict[str, list[str]] | None = None) -> str:
    """One table as a compact CREATE TABLE, optionally with example values in a trailing comment per column."""
    parts = []
    for column in table.columns:
        text = f"{column.name} {column.type}".strip()
        if values and values.get(column.name):
            text += " -- e.g. " + ", ".join(repr(v) for v in values[column.name])
        parts.append(text)
    if table.primary_key:
        parts.append(f"primary key ({', '.join(table.primary_key)})")
    for column, ref_table, ref_column in table.foreign_keys:
        parts.append(f"foreign key ({column}) references {ref_table}({ref_column})" if ref_column
                     else f"foreign key ({column}) references {ref_table}")
    return f"CREATE TABLE {table.name} (\n  " + ",\n  ".join(parts) + "\n);"


def serialize_schema(db_path: str | Path, *, values_per_column: int = 0, max_tokens: int | None = None,
                     count_tokens=None) -> str:
    """The prompt text of a database's schema, deterministic, kept within `max_tokens` when given.

    Sample values are dropped first, then trailing tables, until the text fits; `count_tokens` defaults to a
    rough 4-characters-per-token estimate when no tokenizer is at hand.
    """
    schema = read_schema(db_path)
    count = count_tokens or (lambda text: (len(text) + 3) // 4)
    values = {}
    if values_per_column:
        values = {t.name: {c.name: sample_values(Path(db_path), t.name, c.name, values_per_column)
                           for c in t.columns} for t in schema.tables}
    blocks = [table_lines(t, values.get(t.name)) for t in schema.tables]
    text = "\n".join(blocks)
    if max_tokens is None or count(text) <= max_tokens:
        return text
    blocks = [table_lines(t) for t in schema.tables]
    while len(blocks) > 1 and count("\n".join(blocks)) > max_tokens:
        blocks.pop()
    return "\n".join(blocks)


def main(argv: list[str]) -> None:
    examples = load_split(argv[0], argv[1] if len(argv) > 1 else "dev")
    print(f"{len(examples)} examples over {len({e.db_id for e in examples})} databases")
    print(serialize_schema(examples[0].db_path, values_per_column=2))


if __name__ == "__main__":
    main(sys.argv[1:])
