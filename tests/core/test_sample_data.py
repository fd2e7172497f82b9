"""The embedded sample dataset: Spider layout, executable gold SQL, schema file true to the databases, determinism.

    .venv/bin/python -m pytest tests/core/test_sample_data.py -q
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from sqlcopilot_core.sample import build, build_sample_spider, ensure_sample_spider, sample_problems
from sqlcopilot_core.sample.common import SampleDatabase

SPIDER_FILES = ["dev.json", "tables.json", "train_spider.json"]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    return build_sample_spider(tmp_path_factory.mktemp("sample") / "sample_spider")


def load(folder: Path, name: str):
    return json.loads((folder / name).read_text(encoding="utf-8"))


def open_read_only(folder: Path, db_id: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{folder / 'database' / db_id / f'{db_id}.sqlite'}?mode=ro", uri=True)


def all_examples(folder: Path) -> list[dict]:
    return load(folder, "train_spider.json") + load(folder, "dev.json")


def test_layout_counts_and_disjoint_splits(sample_dir):
    assert sorted(p.name for p in sample_dir.iterdir()) == ["database"] + SPIDER_FILES
    schemas = load(sample_dir, "tables.json")
    db_ids = [schema["db_id"] for schema in schemas]
    assert len(db_ids) >= 6 and len(set(db_ids)) == len(db_ids)
    assert sorted(p.name for p in (sample_dir / "database").iterdir()) == sorted(db_ids)
    train, dev = load(sample_dir, "train_spider.json"), load(sample_dir, "dev.json")
    assert len(train) + len(dev) >= 150 and len(train) >= 100 and len(dev) >= 40
    assert all(set(example) == {"db_id", "question", "query"} for example in train + dev)
    train_dbs, dev_dbs = {e["db_id"] for e in train}, {e["db_id"] for e in dev}
    assert not train_dbs & dev_dbs
    assert train_dbs | dev_dbs == set(db_ids)
    questions = [(e["db_id"], e["question"]) for e in train + dev]
    assert len(set(questions)) == len(questions)


def test_every_gold_query_executes_and_nearly_all_return_rows(sample_dir):
    empty = []
    for example in all_examples(sample_dir):
        with open_read_only(sample_dir, example["db_id"]) as connection:
            rows = connection.execute(example["query"]).fetchall()
        if not rows:
            empty.append(example["question"])
    assert len(empty) <= 0.1 * len(all_examples(sample_dir)), empty


def test_gold_queries_cover_spider_constructs(sample_dir):
    queries = [example["query"].upper() for example in all_examples(sample_dir)]
    patterns = {
        "join": r"\bJOIN\b", "three-table join": r"JOIN .* JOIN", "group by": r"\bGROUP BY\b",
        "having": r"\bHAVING\b", "order by limit": r"ORDER BY .* LIMIT", "distinct": r"\bDISTINCT\b",
        "not in": r"\bNOT IN \(SELECT", "scalar subquery": r"[<>=] \(SELECT", "union": r"\bUNION\b",
        "intersect": r"\bINTERSECT\b", "except": r"\bEXCEPT\b", "null test": r"\bIS (NOT )?NULL\b",
    }
    for construct, pattern in patterns.items():
        assert sum(bool(re.search(pattern, q)) for q in queries) >= 3, f"too few gold queries use {construct}"


def test_tables_json_matches_the_sqlite_files(sample_dir):
    for schema in load(sample_dir, "tables.json"):
        with open_read_only(sample_dir, schema["db_id"]) as connection:
            tables = [row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            assert sorted(schema["table_names_original"]) == tables and 3 <= len(tables) <= 5
            assert len(schema["table_names"]) == len(tables)
            columns = schema["column_names_original"]
            assert columns[0] == [-1, "*"] and schema["column_names"][0] == [-1, "*"]
            assert len(schema["column_names"]) == len(columns) == len(schema["column_types"])
            for table_index, column in columns[1:]:
                connection.execute(f'SELECT "{column}" FROM "{schema["table_names_original"][table_index]}" LIMIT 0')
            assert set(schema["column_types"]) <= {"text", "number", "time", "others"}
            declared_pks = {(t, c) for t in tables for _, c, _, _, _, pk in
                            connection.execute(f'PRAGMA table_info("{t}")') if pk}
            listed_pks = {(schema["table_names_original"][columns[i][0]], columns[i][1])
                          for i in schema["primary_keys"]}
            assert listed_pks == declared_pks and len(listed_pks) == len(tables)
            declared_fks = {(t, fk[3], fk[2], fk[4]) for t in tables
                            for fk in connection.execute(f'PRAGMA foreign_key_list("{t}")')}
            listed_fks = {(schema["table_names_original"][columns[a][0]], columns[a][1],
                           schema["table_names_original"][columns[b][0]], columns[b][1])
                          for a, b in schema["foreign_keys"]}
            assert listed_fks == declared_fks and listed_fks


def test_databases_hold_rows_with_some_nulls_and_intact_references(sample_dir):
    for schema in load(sample_dir, "tables.json"):
        with open_read_only(sample_dir, schema["db_id"]) as connection:
            assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
            null_count = 0
            for table in schema["table_names_original"]:
                rows = connection.execute(f'SELECT * FROM "{table}"').fetchall()
                assert 5 <= len(rows) <= 600, f"{schema['db_id']}.{table} has {len(rows)} rows"
                null_count += sum(value is None for row in rows for value in row)
            assert null_count > 0, f"{schema['db_id']} has no NULLs"


def test_two_builds_are_identical(sample_dir, tmp_path):
    again = build_sample_spider(tmp_path / "again")
    for name in SPIDER_FILES:
        assert (again / name).read_bytes() == (sample_dir / name).read_bytes(), name
    for schema in load(again, "tables.json"):
        with open_read_only(again, schema["db_id"]) as first, open_read_only(sample_dir, schema["db_id"]) as second:
            assert list(first.iterdump()) == list(second.iterdump()), schema["db_id"]


def test_ensure_keeps_a_complete_folder(sample_dir):
    db_file = sample_dir / "database" / "online_shop" / "online_shop.sqlite"
    before = (sample_dir.stat().st_ino, db_file.stat().st_ino, db_file.stat().st_mtime_ns)
    assert sample_problems(sample_dir) == []
    assert ensure_sample_spider(sample_dir) == sample_dir
    assert (sample_dir.stat().st_ino, db_file.stat().st_ino, db_file.stat().st_mtime_ns) == before


def test_ensure_rebuilds_a_damaged_folder(tmp_path):
    folder = build_sample_spider(tmp_path / "sample")
    (folder / "database" / "music_festival" / "music_festival.sqlite").unlink()
    (folder / "dev.json").write_text("[]\n")
    problems = sample_problems(folder)
    assert len(problems) == 2 and "music_festival.sqlite" in problems[1] and "dev.json" in problems[0]
    ensure_sample_spider(folder)
    assert sample_problems(folder) == []
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]  # no staging or retired folders left behind


def test_ensure_builds_in_the_work_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLCOPILOT_HOME", str(tmp_path))
    folder = ensure_sample_spider()
    assert folder == tmp_path / "sample_spider" and sample_problems(folder) == []


def test_a_broken_gold_query_fails_the_build_naming_it(tmp_path, monkeypatch):
    broken = SampleDatabase(
        "tiny", "train", 0, "CREATE TABLE pets (pet_id INTEGER PRIMARY KEY, name TEXT);",
        lambda rng: {"pets": [(1, "Rex")]}, (("How old is Rex?", "SELECT age FROM pets"),),
    )
    monkeypatch.setattr(build, "DATABASES", (broken,))
    with pytest.raises(build.SampleBuildError, match=r"tiny.*How old is Rex\?.*no such column: age"):
        build_sample_spider(tmp_path / "sample")
    assert list(tmp_path.iterdir()) == []


def test_sample_database_rejects_unknown_split_and_repeated_questions():
    with pytest.raises(ValueError, match="tiny: split"):
        SampleDatabase("tiny", "test", 0, "", lambda rng: {}, ())
    with pytest.raises(ValueError, match="tiny: repeated questions"):
        SampleDatabase("tiny", "dev", 0, "", lambda rng: {}, (("Q?", "SELECT 1"), ("Q?", "SELECT 2")))
