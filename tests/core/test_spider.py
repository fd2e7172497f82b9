import json
import sqlite3

import pytest

from sqlcopilot_core.spider import SpiderFormatError, load_split, read_schema, serialize_schema


def write_db(path, statements):
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(statements)


@pytest.fixture()
def spider_dir(tmp_path):
    write_db(tmp_path / "database" / "shop" / "shop.sqlite",
             "CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT);"
             "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id), total REAL);"
             "INSERT INTO customer VALUES (1,'Ann'),(2,'Bob');INSERT INTO orders VALUES (1,1,9.5);")
    dev = [{"question": "How many customers?", "query": "SELECT count(*) FROM customer", "db_id": "shop"},
           {"question": "Lost?", "query": "SELECT 1", "db_id": "gone"}]
    (tmp_path / "dev.json").write_text(json.dumps(dev))
    (tmp_path / "train_spider.json").write_text(json.dumps(dev[:1]))
    (tmp_path / "train_others.json").write_text(json.dumps(dev[:1]))
    (tmp_path / "tables.json").write_text("[]")
    return tmp_path


def test_missing_database_is_skipped_and_counted(spider_dir):
    with pytest.warns(UserWarning, match=r"skipped 1 example\(s\) whose database is missing \(gone\)"):
        examples = load_split(spider_dir, "dev")
    assert [(e.db_id, e.index) for e in examples] == [("shop", 0)]
    assert len(load_split(spider_dir, "train")) == 2  # train_others.json is added when present


@pytest.mark.parametrize("content, message", [
    ('[{"question": "q", "query": "SELECT 1", "db_id": "shop"},', r"dev.json: invalid JSON at line 1 column"),
    ('{"question": "q"}', r"dev.json: expected a JSON list"),
    ('[{"question": "q", "query": "SELECT 1", "db_id": "shop"}, {"question": "q", "db_id": "shop"}]',
     r"dev.json: example 1 has no usable 'query'"),
    ('[["q", "SELECT 1", "shop"]]', r"dev.json: example 0 is a list"),
])
def test_malformed_file_names_file_and_position(spider_dir, content, message):
    (spider_dir / "dev.json").write_text(content)
    with pytest.raises(SpiderFormatError, match=message):
        load_split(spider_dir, "dev")


def test_schema_serialization_keys_values_budget(spider_dir):
    db = spider_dir / "database" / "shop" / "shop.sqlite"
    schema = read_schema(db)
    assert [t.name for t in schema.tables] == ["customer", "orders"]
    assert schema.tables[1].foreign_keys == (("customer_id", "customer", "id"),)
    text = serialize_schema(db, values_per_column=2)
    assert "primary key (id)" in text and "foreign key (customer_id) references customer(id)" in text
    assert "-- e.g. 'Ann', 'Bob'" in text and "total real" in text
    assert text == serialize_schema(db, values_per_column=2)  # deterministic
    small = serialize_schema(db, values_per_column=2, max_tokens=30)
    assert "e.g." not in small and "CREATE TABLE customer" in small and "orders" not in small


def test_real_spider_layout(shared_spider):
    with pytest.warns(UserWarning, match=r"skipped 96 example\(s\).*baseball_1, soccer_1"):
        train = load_split(shared_spider, "train")
    assert len(train) == 7000 - 96
    dev = load_split(shared_spider, "dev")
    assert len(dev) == 507 and all(e.sql is not None for e in dev)
    assert train[0].sql is None  # the shared train file carries only question, query, db_id
    text = serialize_schema(dev[0].db_path, values_per_column=3, max_tokens=600)
    assert text.startswith("CREATE TABLE") and (len(text) + 3) // 4 <= 600
