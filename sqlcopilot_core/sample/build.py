"""Build the embedded sample dataset in the official Spider layout, from the domain modules of this package.

    python -m sqlcopilot_core.sample /tmp/sample_spider

The layout: train_spider.json, dev.json, tables.json and database/<db_id>/<db_id>.sqlite. tables.json is read back
from the written SQLite files (PRAGMA table_info / foreign_key_list), so it cannot drift from the schemas, and every
gold query is executed before the folder is published: a broken example fails the build, naming itself.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sqlcopilot_core import paths
from sqlcopilot_core.sample import festival, flights, hospital, library, school, shop
from sqlcopilot_core.sample.common import SampleDatabase

DATABASES: tuple[SampleDatabase, ...] = (
    shop.DATABASE, library.DATABASE, school.DATABASE, hospital.DATABASE,  # train
    flights.DATABASE, festival.DATABASE,  # dev
)
SPLIT_FILES = {"train": "train_spider.json", "dev": "dev.json"}


class SampleBuildError(RuntimeError):
    """A sample database or one of its gold examples is wrong; the message names which."""


def build_sample_spider(out_dir: Path) -> Path:
    """Write the sample dataset to `out_dir` (replacing what is there), atomically, and return `out_dir`."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published folder should read like any other
    try:
        schemas = [write_database(database, staging / "database") for database in DATABASES]
        write_json(staging / "tables.json", schemas)
        for split, filename in SPLIT_FILES.items():
            (staging / filename).write_text(split_json(split), encoding="utf-8")
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def ensure_sample_spider(out_dir: Path | None = None) -> Path:
    """Return the sample dataset folder (default paths.sample_data_dir()), building it only if absent or stale."""
    out_dir = Path(out_dir).resolve() if out_dir is not None else paths.sample_data_dir()
    if sample_problems(out_dir):
        build_sample_spider(out_dir)
    return out_dir


def sample_problems(out_dir: Path) -> list[str]:
    """What is missing or out of date in a sample folder; empty when it is complete and matches this code."""
    problems = []
    for split, filename in SPLIT_FILES.items():
        path = Path(out_dir) / filename
        if not path.is_file():
            problems.append(f"missing {path}")
        elif path.read_text(encoding="utf-8") != split_json(split):
            problems.append(f"{path} differs from the examples in sqlcopilot_core/sample (made by older code?)")
    tables_path = Path(out_dir) / "tables.json"
    try:
        listed = sorted(schema["db_id"] for schema in json.loads(tables_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as error:
        problems.append(f"unreadable {tables_path}: {error}")
    else:
        if listed != sorted(database.db_id for database in DATABASES):
            problems.append(f"{tables_path} lists databases {listed}, expected those of sqlcopilot_core/sample")
    for database in DATABASES:
        db_path = Path(out_dir) / "database" / database.db_id / f"{database.db_id}.sqlite"
        if not db_path.is_file() or db_path.stat().st_size == 0:
            problems.append(f"missing {db_path}")
    return problems


def write_database(database: SampleDatabase, database_root: Path) -> dict:
    """Create, fill and check one SQLite file; return its Spider schema entry."""
    db_path = database_root / database.db_id / f"{database.db_id}.sqlite"
    db_path.parent.mkdir(parents=True)
    connection = sqlite3.connect(db_path)
    try:
        connection.execute("PRAGMA foreign_keys = ON")  # a dangling reference in generated rows fails the build
        connection.executescript(database.schema_sql)
        for table, rows in database.make_rows(random.Random(database.seed)).items():
            insert_rows(connection, database.db_id, table, rows)
        connection.commit()
        check_gold_queries(connection, database)
        return spider_schema(connection, database.db_id)
    finally:
        connection.close()


def insert_rows(connection: sqlite3.Connection, db_id: str, table: str, rows: list[tuple]) -> None:
    if not rows:
        raise SampleBuildError(f"sample database {db_id}: table {table} got no rows")
    placeholders = ", ".join("?" * len(rows[0]))
    try:
        connection.executemany(f'INSERT INTO "{table}" VALUES ({placeholders})', rows)
    except sqlite3.Error as error:
        raise SampleBuildError(f"sample database {db_id}: inserting into {table} failed: {error}") from error


def check_gold_queries(connection: sqlite3.Connection, database: SampleDatabase) -> None:
    for question, query in database.examples:
        try:
            connection.execute(query).fetchall()
        except sqlite3.Error as error:
            raise SampleBuildError(
                f"sample database {database.db_id}: gold query for {question!r} fails: {error}\n  {query}"
            ) from error


def spider_schema(connection: sqlite3.Connection, db_id: str) -> dict:
    """The tables.json entry of an open database, in the official Spider format, read from SQLite itself."""
    tables = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
    columns, column_types, primary_keys = [[-1, "*"]], ["text"], []
    column_index: dict[tuple[str, str], int] = {}
    for table_index, table in enumerate(tables):
        table_primary_key = []
        for _cid, name, declared_type, _notnull, _default, pk_position in connection.execute(
                f'PRAGMA table_info("{table}")'):
            column_index[(table.lower(), name.lower())] = len(columns)
            if pk_position:
                table_primary_key.append((pk_position, len(columns)))
            columns.append([table_index, name])
            column_types.append(spider_column_type(declared_type))
        primary_keys.extend(index for _, index in sorted(table_primary_key))
    foreign_keys = []
    for table in tables:
        for _id, _seq, ref_table, from_column, to_column, *_ in connection.execute(
                f'PRAGMA foreign_key_list("{table}")'):
            if to_column is None:
                raise SampleBuildError(f"sample database {db_id}: foreign key {table}.{from_column} must name "
                                       f"the column it references in {ref_table}")
            foreign_keys.append([column_index[(table.lower(), from_column.lower())],
                                 column_index[(ref_table.lower(), to_column.lower())]])
    return {
        "column_names": [[table_index, natural_name(name)] for table_index, name in columns],
        "column_names_original": columns,
        "column_types": column_types,
        "db_id": db_id,
        "foreign_keys": sorted(foreign_keys),
        "primary_keys": primary_keys,
        "table_names": [natural_name(table) for table in tables],
        "table_names_original": tables,
    }


def spider_column_type(declared_type: str) -> str:
    """Spider's coarse type of an SQLite declared type: text, number, time or others."""
    declared = declared_type.upper()
    if "DATE" in declared or "TIME" in declared:
        return "time"
    if any(word in declared for word in ("INT", "REAL", "FLOA", "DOUB", "NUM", "DEC")):
        return "number"
    if any(word in declared for word in ("CHAR", "TEXT", "CLOB")) or not declared:
        return "text"
    return "others"


def natural_name(original: str) -> str:
    """Spider's readable name: "order_items" -> "order items", "flightNumber" -> "flight number"."""
    if original == "*":
        return original
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", original).replace("_", " ").lower()


def split_json(split: str) -> str:
    """The exact text of a split's file, so identical examples give identical bytes."""
    return to_json([{"db_id": database.db_id, "question": question, "query": query}
                    for database in DATABASES if database.split == split
                    for question, query in database.examples])


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def write_json(path: Path, value: object) -> None:
    path.write_text(to_json(value), encoding="utf-8")


def publish(staging: Path, out_dir: Path) -> None:
    """Move the finished folder into place; a previous copy is moved aside first, then deleted."""
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, retired / out_dir.name)
        os.replace(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
