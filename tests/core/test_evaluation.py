import json
import sqlite3
from pathlib import Path

import pytest

from sqlcopilot_core.evaluation import (PredictionFileError, execution_match, format_summary_table, read_predictions,
                                        results_equal, score_predictions, write_summary)
from sqlcopilot_core.hardness import (components_from_text, example_hardness, has_outer_order_by, hardness_from_text,
                                      text_agreement)
from sqlcopilot_core.spider import Example, load_split

SHARED_SPIDER = Path(__file__).resolve().parents[2].parent / "shared" / "spider"
# Measured on shared/spider dev.json (507 examples): the text-based level agrees with the parsed one on 100%.
TEXT_HARDNESS_AGREEMENT_FLOOR = 0.99


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "database" / "concert" / "concert.sqlite"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE singer(id INTEGER PRIMARY KEY, name TEXT, age INTEGER, country TEXT,"
                           " rating REAL);"
                           "INSERT INTO singer VALUES (1,'Ann',30,'France',4.5),(2,'Bob',40,'Peru',3.0),"
                           "(3,'Cy',NULL,'Peru',NULL),(4,'Di',25,'Chile',4.25);")
    conn.close()
    return path


def example(db, index, query, question=None):
    return Example(question or f"question {index}", query, "concert", db, index)


# ---- result comparison ----

def test_row_order_matters_only_with_gold_order_by(db):
    ascending, descending = "SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY age DESC"
    assert not execution_match(db, ascending, descending).match
    assert execution_match(db, "SELECT name FROM singer", "SELECT name FROM singer ORDER BY name DESC").match
    assert not results_equal([(1,), (2,)], [(2,), (1,)], order_matters=True)
    assert results_equal([(1,), (2,)], [(2,), (1,)], order_matters=False)


def test_outermost_order_by_detection():
    assert has_outer_order_by("SELECT a FROM t ORDER BY a")
    assert has_outer_order_by("SELECT a FROM t UNION SELECT b FROM u order  by 1")
    assert not has_outer_order_by("SELECT a FROM t WHERE a IN (SELECT b FROM u ORDER BY b LIMIT 3)")
    assert not has_outer_order_by("SELECT a FROM t WHERE note = 'order by'")


def test_rows_are_a_multiset(db):
    assert not results_equal([(1,), (1,)], [(1,)], order_matters=False)
    assert not results_equal([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)
    assert not execution_match(db, "SELECT country FROM singer", "SELECT DISTINCT country FROM singer").match


def test_column_order_is_free(db):
    assert execution_match(db, "SELECT name, age FROM singer", "SELECT age, name FROM singer").match
    assert execution_match(db, "SELECT name, age FROM singer ORDER BY id", "SELECT age, name FROM singer").match
    # Equal column multisets but rows paired differently: no permutation helps.
    assert not results_equal([(1, "a"), (2, "b")], [(1, "b"), (2, "a")], order_matters=False)
    assert results_equal([(1, 1, 2), (1, 1, 3)], [(3, 1, 1), (2, 1, 1)], order_matters=False)
    assert not results_equal([(1, 2)], [(1, 2, 2)], order_matters=False)


def test_identical_columns_do_not_multiply_the_permutations_tried():
    # The first pairing of the two value columns is wrong; trying all 12! orders of the NULL columns behind it
    # before the right pairing would exhaust the permutation budget.
    gold = [(i, 3 * i % 10) + (None,) * 12 for i in range(10)]
    pred = [(3 * i % 10, i) + (None,) * 12 for i in range(10)]
    assert results_equal(gold, pred, order_matters=False)


def test_nulls_floats_and_ints(db):
    assert results_equal([(None, 1)], [(None, 1)], order_matters=False)
    assert not results_equal([(None,)], [(0,)], order_matters=False)
    assert results_equal([(1,)], [(1.0,)], order_matters=False)
    assert results_equal([(0.1 + 0.2,)], [(0.3,)], order_matters=False)
    assert not results_equal([(0.3,)], [(0.3001,)], order_matters=False)
    assert not results_equal([("1",)], [(1,)], order_matters=False)
    assert execution_match(db, "SELECT avg(rating) FROM singer", "SELECT sum(rating) / count(rating) FROM singer").match
    assert execution_match(db, "SELECT count(*) FROM singer", "SELECT 4.0").match


def test_empty_results_match_whatever_their_columns(db):
    assert execution_match(db, "SELECT name FROM singer WHERE age > 99", "SELECT id, age FROM singer WHERE 0").match


def test_failing_prediction_and_failing_gold(db):
    result = execution_match(db, "SELECT name FROM singer", "SELECT nickname FROM singer")
    assert (result.match, result.error_kind, result.gold_error) == (False, "unknown_column", None)
    assert execution_match(db, "SELECT name FROM singer", "  ").error_kind == "empty"
    broken_gold = execution_match(db, "SELECT name FROM singers", "SELECT name FROM singer")
    assert not broken_gold.match and broken_gold.error_kind is None
    assert broken_gold.gold_error.startswith("unknown_table")


def test_row_cap_is_raised_to_the_gold_row_count(db):
    many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) SELECT i FROM n"
    assert execution_match(db, many, many, max_rows=10).match
    too_many = execution_match(db, "SELECT name FROM singer", many, max_rows=10)
    assert (too_many.match, too_many.error_kind) == (False, "too_many_rows")


# ---- scoring a split ----

def test_gold_against_itself_scores_one(db):
    queries = ["SELECT count(*) FROM singer", "SELECT name FROM singer ORDER BY age DESC LIMIT 2",
               "SELECT country, count(*) FROM singer GROUP BY country HAVING count(*) > 1",
               "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)"]
    examples = [example(db, i, q) for i, q in enumerate(queries)]
    summary = score_predictions(examples, queries, progress=False)
    assert (summary["ex"], summary["n"], summary["correct"], summary["gold_errors"]) == (1.0, 4, 4, 0)
    assert summary["by_db"] == {"concert": {"ex": 1.0, "n": 4, "correct": 4}}
    assert [row["hardness"] for row in summary["per_example"]] == ["easy", "medium", "medium", "hard"]
    assert summary["by_hardness"]["extra"] == {"ex": None, "n": 0, "correct": 0}
    assert set(summary["errors"].values()) == {0}


def test_summary_counts_errors_and_writes_files(db, tmp_path):
    examples = [example(db, i, "SELECT name FROM singer") for i in range(4)]
    predictions = ["SELECT name FROM singer", "SELEC name", "", "SELECT id FROM singer"]
    summary = score_predictions(examples, predictions, progress=False)
    assert (summary["ex"], summary["correct"]) == (0.25, 1)
    assert summary["errors"]["syntax"] == 1 and summary["errors"]["empty"] == 1
    assert [row["match"] for row in summary["per_example"]] == [True, False, False, False]
    assert set(summary["per_example"][0]) >= {"index", "db_id", "question", "gold", "pred", "match", "error_kind",
                                              "hardness"}
    table = format_summary_table(summary)
    assert "execution accuracy 25.00% (1/4, 95% interval 4.6-69.9%)" in table
    assert any(line.split() == ["concert", "4", "25.0"] for line in table.splitlines())
    assert any(line.split() == ["syntax", "1"] for line in table.splitlines())
    write_summary(summary, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["ex"] == 0.25 and "per_example" not in written
    scored = (tmp_path / "out" / "predictions_scored.jsonl").read_text().splitlines()
    assert [json.loads(line)["pred"] for line in scored] == predictions
    with pytest.raises(ValueError, match="3 predictions for 4 examples"):
        score_predictions(examples, predictions[:3], progress=False)


# ---- reading predictions ----

def test_read_predictions_json_lines(db, tmp_path):
    examples = [example(db, 0, "SELECT 1", "How many?"), example(db, 1, "SELECT 2", "Who?")]
    path = tmp_path / "preds.jsonl"
    path.write_text('\n{"db_id": "concert", "question": "How many?", "pred": "SELECT count(*) FROM singer"}\n'
                    '{"db_id": "concert", "question": "Who?", "pred": ""}\n')
    assert read_predictions(path, examples) == ["SELECT count(*) FROM singer", ""]
    path.write_text('{"db_id": "concert", "question": "Who?", "pred": "SELECT 1"}\n'
                    '{"db_id": "concert", "question": "How many?", "pred": "SELECT 2"}\n')
    with pytest.raises(PredictionFileError, match=r"preds.jsonl line 1: question 'Who\?' does not match example 0"):
        read_predictions(path, examples)
    path.write_text('{"db_id": "concert", "question": "How many?", "pred": "SELECT 1"}\n{"pred": 3}\n')
    with pytest.raises(PredictionFileError, match=r"line 2: expected an object with a string field 'pred'"):
        read_predictions(path, examples)


def test_read_predictions_official_format(db, tmp_path):
    examples = [example(db, 0, "SELECT 1"), example(db, 1, "SELECT 2")]
    path = tmp_path / "pred.txt"
    path.write_text("SELECT count(*) FROM singer\tconcert\n\nSELECT name FROM singer\n")
    assert read_predictions(path, examples) == ["SELECT count(*) FROM singer", "SELECT name FROM singer"]
    path.write_text("SELECT 1\tconcert\nSELECT 2\tpets_1\n")
    with pytest.raises(PredictionFileError, match=r"pred.txt line 2: db_id 'pets_1' does not match example 1"):
        read_predictions(path, examples)
    path.write_text("SELECT 1\n")
    with pytest.raises(PredictionFileError, match=r"pred.txt: 1 predictions \(one SQL per line\) for 2 examples"):
        read_predictions(path, examples)


# ---- hardness ----

@pytest.mark.parametrize("sql, counts, level", [
    ("SELECT count(*) FROM singer", (0, 0, 0), "easy"),
    ("SELECT name, age FROM singer WHERE age BETWEEN 20 AND 30", (1, 0, 1), "medium"),
    ("SELECT T1.name FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id WHERE T2.x LIKE '%y%' OR T2.z = 1", (4, 0, 1),
     "extra"),
    ("SELECT name FROM singer WHERE id NOT IN (SELECT singer_id FROM concert)", (1, 1, 0), "hard"),
    # Spider counts a HAVING's AND as an "aggregate" (and not its aggregate functions): 1 + 1 > 1 adds to others.
    ("SELECT country FROM singer GROUP BY country HAVING count(*) > 1 AND max(age) < 50", (1, 0, 0), "easy"),
    ("SELECT country, count(*) FROM singer GROUP BY country HAVING count(*) > 1 AND max(age) < 50", (1, 0, 2),
     "medium"),
    # ... and a negated condition as one too.
    ("SELECT name FROM singer WHERE age NOT IN (1, 2) AND country NOT LIKE 'P%'", (2, 0, 2), "extra"),
    ("SELECT name FROM singer INTERSECT SELECT name FROM singer WHERE age > 3 ORDER BY name", (0, 1, 0), "hard"),
    ("SELECT max(age), min(age), avg(age) FROM singer GROUP BY country, name ORDER BY count(*) DESC LIMIT 1",
     (3, 0, 3), "extra"),
])
def test_text_hardness_counts_like_spider(sql, counts, level):
    assert tuple(vars(components_from_text(sql)).values()) == counts
    assert hardness_from_text(sql) == level


@pytest.mark.parametrize("garbage", ["", "(((", "SELECT", "SELECT ,, FROM WHERE AND OR", "')", "ORDER BY ) ("])
def test_text_hardness_never_raises(garbage):
    assert hardness_from_text(garbage) in ("easy", "medium", "hard", "extra")


def test_parsed_sql_is_preferred_and_malformed_sql_is_named(db):
    parsed = {"from": {"table_units": [["table_unit", 0]], "conds": []}, "select": [False, [[3, [0, [0, 0, False],
              None]], [0, [0, [0, 1, False], None]]]], "where": [], "groupBy": [], "having": [], "orderBy": [],
              "limit": None, "intersect": None, "union": None, "except": None}
    with_parsed = Example("q", "SELECT count(*) FROM singer", "concert", db, 7, parsed)
    assert example_hardness(with_parsed) == "medium"  # two select columns in the parsed form
    broken = Example("q", "SELECT 1", "concert", db, 7, {"select": []})
    with pytest.raises(ValueError, match="example 7 \\(concert\\): malformed parsed 'sql'"):
        example_hardness(broken)


@pytest.mark.skipif(not (SHARED_SPIDER / "dev.json").is_file(), reason="shared Spider data not present")
def test_text_hardness_agrees_with_parsed_on_spider_dev():
    agreement, disagreements = text_agreement(load_split(SHARED_SPIDER, "dev"))
    assert agreement >= TEXT_HARDNESS_AGREEMENT_FLOOR, [(ex.index, p, t) for ex, p, t in disagreements[:10]]


@pytest.mark.parametrize("pred", ["", "   ", "-- no idea", "/* x */", ";", "-- a\n/* b */ ;", "/* never closed"])
def test_a_prediction_without_a_statement_is_wrong_even_where_gold_is_empty(db, pred):
    result = execution_match(db, "SELECT name FROM singer WHERE age > 100", pred)
    assert (result.match, result.error_kind) == (False, "empty")
    summary = score_predictions([example(db, 0, "SELECT name FROM singer WHERE age > 100")], [pred], progress=False)
    assert (summary["correct"], summary["errors"]["empty"]) == (0, 1)
