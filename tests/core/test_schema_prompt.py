import json
import sqlite3

import pytest

from sqlcopilot_core.schema_prompt import (PromptSettings, SchemaPrompter, gold_tables_columns, main, quote_name,
                                           schema_stats)
from sqlcopilot_core.spider import read_schema, table_lines


def write_db(path, statements):
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(statements)
    return path


@pytest.fixture()
def music_db(tmp_path):
    return write_db(tmp_path / "music.sqlite", """
        CREATE TABLE singer(singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
        CREATE TABLE concert(concert_id INTEGER PRIMARY KEY, singer_id INTEGER REFERENCES singer(singer_id),
                             "concert year" INTEGER);
        INSERT INTO singer VALUES (1, 'Ann', 'France'), (2, 'Bob', 'Peru');
        INSERT INTO concert VALUES (1, 1, 2014);""")


@pytest.fixture()
def shop_db(tmp_path):
    """Five tables, too many for a tight budget: stadium, then unrelated ones."""
    return write_db(tmp_path / "shop.sqlite", """
        CREATE TABLE person(person_id INTEGER PRIMARY KEY, full_name TEXT, nationality TEXT, birth_date TEXT);
        CREATE TABLE gadget(gadget_id INTEGER PRIMARY KEY, label TEXT, price REAL, weight REAL, colour TEXT);
        CREATE TABLE stadium(stadium_id INTEGER PRIMARY KEY, stadium_name TEXT, capacity INTEGER, city TEXT);
        CREATE TABLE purchase(purchase_id INTEGER PRIMARY KEY, person_id INTEGER REFERENCES person(person_id),
                              gadget_id INTEGER REFERENCES gadget, paid REAL, paid_on TEXT);
        CREATE TABLE warehouse(warehouse_id INTEGER PRIMARY KEY, address TEXT, manager TEXT, opened TEXT);
        INSERT INTO person VALUES (1, 'Ann Lee', 'France', '1990-01-01'), (2, 'Bob Ray', 'Peru', '1985-05-05');
        INSERT INTO gadget VALUES (1, 'Phone', 300, 0.2, 'black');
        INSERT INTO stadium VALUES (1, 'Big Bowl', 50000, 'Lima');""")


def test_compact_form_exact(music_db):
    text = SchemaPrompter(PromptSettings(max_schema_tokens=None)).schema_text(music_db, "anything")
    assert text == ('singer(singer_id, name, country)\n'
                    'concert(concert_id, singer_id, "concert year")\n'
                    '-- joins: concert.singer_id = singer.singer_id')


def test_create_table_form_is_spiders_table_lines(music_db):
    prompter = SchemaPrompter(PromptSettings(form="create_table", max_schema_tokens=None))
    expected = "\n".join(table_lines(t) for t in read_schema(music_db).tables)
    assert prompter.schema_text(music_db, "q") == expected


def test_sample_values_shown_when_they_fit_and_dropped_first(music_db):
    roomy = SchemaPrompter(PromptSettings(max_schema_tokens=None, values_per_column=2))
    text = roomy.schema_text(music_db, "q")
    assert "singer(singer_id [1, 2], name ['Ann', 'Bob'], country ['Peru', 'France'])" in text
    plain = SchemaPrompter(PromptSettings(max_schema_tokens=None)).schema_text(music_db, "q")
    budget = SchemaPrompter(PromptSettings()).count_tokens(plain)
    assert SchemaPrompter(PromptSettings()).count_tokens(text) > budget
    tight = SchemaPrompter(PromptSettings(max_schema_tokens=budget, values_per_column=2))
    assert tight.fits_whole(music_db) and tight.schema_text(music_db, "q") == plain
    assert not SchemaPrompter(PromptSettings(max_schema_tokens=budget - 1, values_per_column=2)).fits_whole(music_db)


def test_whole_schema_when_it_fits_whatever_the_question(shop_db):
    prompter = SchemaPrompter(PromptSettings(max_schema_tokens=400))
    assert prompter.fits_whole(shop_db)
    texts = {prompter.schema_text(shop_db, q) for q in ["Which stadium is largest?", "List gadget prices", ""]}
    assert len(texts) == 1
    text = texts.pop()
    assert all(name in text for name in ("person(", "gadget(", "stadium(", "purchase(", "warehouse("))


def test_tight_budget_keeps_the_named_table_and_drops_unrelated_ones(shop_db):
    prompter = SchemaPrompter(PromptSettings(max_schema_tokens=30))
    assert not prompter.fits_whole(shop_db)
    text = prompter.schema_text(shop_db, "What is the capacity of each stadium?")
    assert prompter.count_tokens(text) <= 30
    assert text.startswith("stadium(stadium_id") and "capacity" in text
    assert "warehouse" not in text and "gadget" not in text
    selection = prompter.selection(shop_db, "What is the capacity of each stadium?")
    assert "stadium" in selection.tables and not selection.whole
    # another question, another filtered schema
    assert "gadget(" in prompter.schema_text(shop_db, "What is the price of the gadgets?")


def test_join_path_and_key_columns_survive_filtering(shop_db):
    prompter = SchemaPrompter(PromptSettings(max_schema_tokens=45))
    text = prompter.schema_text(shop_db, "How much did each person pay for purchases?")
    assert "person(person_id" in text and "purchase(purchase_id, person_id, gadget_id" in text
    assert "-- joins: purchase.person_id = person.person_id" in text
    assert "stadium" not in text and "warehouse" not in text


def test_value_match_gives_a_hint_and_promotes_its_table(shop_db):
    prompter = SchemaPrompter(PromptSettings(max_schema_tokens=20))
    question = "Who comes from france?"
    assert prompter.value_hints(shop_db, question) == "-- person.nationality = 'France'\n"
    assert prompter.schema_text(shop_db, question).startswith("person(")
    assert prompter.value_hints(shop_db, "Who comes from Spain?") == ""
    assert prompter.value_hints(shop_db, "Who comes from Lima?") == "-- stadium.city = 'Lima'\n"
    assert prompter.schema_text(shop_db, "Who comes from Lima?").startswith("stadium(")


def test_value_hints_quoted_first_longest_ngrams_limited(shop_db):
    prompter = SchemaPrompter(PromptSettings(value_hints=2))
    question = "Did Ann Lee from Peru buy a 'Phone' in black?"
    assert prompter.value_hints(shop_db, question) == ("-- gadget.label = 'Phone'\n"
                                                       "-- person.full_name = 'Ann Lee'\n")
    assert SchemaPrompter(PromptSettings(value_hints=0)).value_hints(shop_db, question) == ""
    assert SchemaPrompter(PromptSettings(value_hints=5)).value_hints(shop_db, question).count("\n") == 4


def test_gold_tables_columns_resolves_aliases_and_bare_columns(music_db):
    schema = read_schema(music_db)
    sql = ('SELECT T1.name, count(*) AS n FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id '
           'WHERE country = "France" GROUP BY T1.name')
    assert gold_tables_columns(sql, schema) == (
        {"singer", "concert"}, {"singer.name", "singer.singer_id", "concert.singer_id", "singer.country"})
    nested = ('SELECT name FROM singer WHERE singer_id NOT IN (SELECT T2.singer_id FROM concert AS T2 '
              'WHERE T2."concert year" > 2010) UNION SELECT name FROM singer WHERE country = \'name\'')
    assert gold_tables_columns(nested, schema) == (
        {"singer", "concert"},
        {"singer.name", "singer.singer_id", "concert.singer_id", "concert.concert year", "singer.country"})


def test_gold_tables_columns_on_spider_queries(shared_spider):
    db = shared_spider / "database" / "concert_singer" / "concert_singer.sqlite"
    schema = read_schema(db)
    sql = ("SELECT T2.name , T2.capacity FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id  =  T2.stadium_id "
           "WHERE T1.year  >=  2014 GROUP BY T2.stadium_id ORDER BY count(*) DESC LIMIT 1")
    assert gold_tables_columns(sql, schema) == (
        {"concert", "stadium"},
        {"stadium.name", "stadium.capacity", "concert.stadium_id", "stadium.stadium_id", "concert.year"})
    sql = "SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)"
    assert gold_tables_columns(sql, schema) == (
        {"stadium", "concert"}, {"stadium.name", "stadium.stadium_id", "concert.stadium_id"})


def spider_folder(tmp_path, db_statements, examples):
    write_db(tmp_path / "database" / "shop" / "shop.sqlite", db_statements)
    (tmp_path / "dev.json").write_text(json.dumps([dict(e, db_id="shop") for e in examples]))
    return tmp_path


def test_schema_stats_keys_and_full_recall_with_a_generous_budget(tmp_path):
    folder = spider_folder(tmp_path / "spider", """
        CREATE TABLE stadium(stadium_id INTEGER PRIMARY KEY, stadium_name TEXT, capacity INTEGER);
        CREATE TABLE game(game_id INTEGER PRIMARY KEY, stadium_id INTEGER REFERENCES stadium, home TEXT);""", [
        {"question": "Largest stadium?", "query": "SELECT stadium_name FROM stadium ORDER BY capacity DESC LIMIT 1"},
        {"question": "Games per stadium?", "query": "SELECT T1.stadium_name, count(*) FROM stadium AS T1 JOIN game "
                                                    "AS T2 ON T1.stadium_id = T2.stadium_id GROUP BY T1.stadium_id"}])
    stats = schema_stats(folder, "dev", PromptSettings(max_schema_tokens=400), progress=False)
    assert set(stats) == {"n", "gold_table_recall", "gold_column_recall", "prompt_tokens", "truncated_share"}
    assert stats["n"] == 2 and stats["gold_table_recall"] == 1.0 and stats["gold_column_recall"] == 1.0
    assert stats["truncated_share"] == 0.0 and set(stats["prompt_tokens"]) == {"median", "p95", "max"}
    assert 0 < stats["prompt_tokens"]["median"] <= stats["prompt_tokens"]["max"]
    tight = schema_stats(folder, "dev", PromptSettings(max_schema_tokens=8), progress=False)
    assert tight["truncated_share"] == 1.0 and tight["gold_table_recall"] == 0.5  # the join loses game


def test_tokenizer_free_counting_is_four_characters_a_token():
    prompter = SchemaPrompter(PromptSettings())
    assert [prompter.count_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


@pytest.mark.parametrize("values, field", [
    ({"form": "yaml"}, "form"), ({"max_schema_tokens": 0}, "max_schema_tokens"),
    ({"value_hints": -1}, "value_hints"), ({"values_per_column": 1.5}, "values_per_column")])
def test_settings_are_checked(values, field):
    with pytest.raises(ValueError, match=f"PromptSettings.{field}"):
        PromptSettings(**values)


def test_odd_names_are_quoted():
    assert [quote_name(n) for n in ("name", "Song Name", "order", 'a"b', "2nd")] == [
        "name", '"Song Name"', '"order"', '"a""b"', '"2nd"']


def test_real_spider_dev_recall_and_cli(shared_spider, capsys):
    stats = main(["--spider-dir", str(shared_spider), "--split", "dev", "--max-schema-tokens", "100"])
    assert json.loads(capsys.readouterr().out) == stats
    assert stats["n"] == 507 and stats["gold_table_recall"] >= 0.99 and stats["truncated_share"] > 0
