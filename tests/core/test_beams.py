"""Beam decoding over a shared prompt, the schema constraint and the execution-guided choice, on the tiny model and
real SQLite files."""

import sqlite3

import pytest
import torch

from sqlcopilot_core.beams import beam_search, choose_runnable, hf_beam_generate, prefix_cache, statement_cuts
from sqlcopilot_core.generate import greedy_generate_ids
from sqlcopilot_core.modeling import tiny_model_and_tokenizer
from sqlcopilot_core.sqlconstraint import SchemaConstraint, check_gold, constraint_spec


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer(seed=0)


@pytest.fixture()
def pets_db(tmp_path):
    db = tmp_path / "pets.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE pets(id INTEGER PRIMARY KEY, name TEXT, age INTEGER);"
                           "CREATE TABLE owners(id INTEGER PRIMARY KEY, pet_id INTEGER, owner_name TEXT);"
                           "INSERT INTO pets VALUES (1, 'Rex', 5), (2, 'Tom', 2);")
    return db


def _sequence_logprob(model, prompt, tokens):
    ids = torch.tensor([list(prompt) + list(tokens)])
    with torch.inference_mode():
        logprobs = model(input_ids=ids).logits[0].float().log_softmax(-1)
    return sum(float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens))


def test_one_beam_is_greedy(tiny):
    model, tokenizer = tiny
    for text in ["SELECT name FROM", "a longer prompt about pets and their owners", "x"]:
        prompt = tokenizer(text).input_ids
        greedy = greedy_generate_ids(model, [prompt], 12, -1, tokenizer.pad_token_id, stop_at_eos=False)[0]
        (only,) = hf_beam_generate(model, prompt, 1, 12, None)
        assert list(only.tokens) == greedy


def test_beams_are_ranked_by_their_length_normalized_log_probability(tiny):
    model, tokenizer = tiny
    prompt = tokenizer("SELECT count(*) FROM").input_ids
    stop = frozenset(tokenizer(" ").input_ids[-1:])  # the byte tokenizer's space ends a hypothesis
    candidates = hf_beam_generate(model, prompt, 4, 10, tokenizer.eos_token_id, stop)
    assert 1 <= len(candidates) <= 4
    assert len({c.tokens for c in candidates}) == len(candidates)
    assert [c.normalized for c in candidates] == sorted((c.normalized for c in candidates), reverse=True)
    for candidate in candidates:  # a beam's score is its tokens' log-probability, recomputed without the cache
        assert candidate.score == pytest.approx(_sequence_logprob(model, prompt, candidate.tokens), abs=1e-3)
    # four beams find a hypothesis at least as probable (unnormalized, same length) as greedy's own
    greedy = greedy_generate_ids(model, [prompt], 10, -1, tokenizer.pad_token_id, stop_at_eos=False)[0]
    assert max(c.score for c in candidates if len(c.tokens) == 10) >= _sequence_logprob(model, prompt, greedy) - 1e-4 \
        if any(len(c.tokens) == 10 for c in candidates) else True


def test_bookkeeping_follows_the_spec_on_a_fixed_table():
    # vocab of 4; token 3 is end-of-text, token 2 a stop id. Logits chosen so the walk order is known.
    first = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    calls = []

    def step(tokens, parents):
        calls.append((tokens, parents))
        return torch.log(torch.tensor([[0.1, 0.1, 0.2, 0.6]] * len(tokens)))

    out = beam_search(first, step, 2, 5, eos_id=3, stop_ids=frozenset({2}))
    # step 1: live beams [0] (0.5) and [1] (0.3). Step 2 walks [0]+eos (0.30), [1]+eos (0.18), [0]+stop 2 (0.10):
    # three finished, so decoding ends; ranked by log-probability per token: [0, 2] (log 0.1 / 2) before [0]
    # (log 0.3) before [1] (log 0.18), and at most two are returned.
    assert calls == [([0, 1], [0, 0])]
    assert [c.tokens for c in out] == [(0, 2), (0,)]
    assert out[1].score == pytest.approx(float(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.6))))
    assert out[0].normalized == pytest.approx(float(torch.log(torch.tensor(0.1))) / 2, abs=1e-6)


def test_prefix_cache_gives_the_same_candidates_as_a_full_prefill(tiny):
    model, tokenizer = tiny
    prefix = tokenizer("CREATE TABLE pets(id, name, age);\n").input_ids
    branch = tokenizer("-- how many pets?\n", add_special_tokens=False).input_ids
    whole = hf_beam_generate(model, prefix + branch, 3, 8, tokenizer.eos_token_id)
    cache = prefix_cache(model, prefix)
    reused = hf_beam_generate(model, prefix + branch, 3, 8, tokenizer.eos_token_id, prefix=(cache, len(prefix)))
    again = hf_beam_generate(model, prefix + branch, 3, 8, tokenizer.eos_token_id, prefix=(cache, len(prefix)))
    assert [c.tokens for c in reused] == [c.tokens for c in whole] == [c.tokens for c in again]


def test_constraint_accepts_every_dev_gold_query(shared_spider, tiny):
    # the byte tokenizer cuts every name at every character: the strictest prefix check
    assert check_gold(shared_spider, "dev", tiny[1]) == []


def test_constraint_rejects_names_the_database_does_not_have(pets_db, tiny):
    constraint = SchemaConstraint.for_database(pets_db, tiny[1])
    ok = ["SELECT name FROM pets WHERE age > 3", "SELECT T1.name FROM pets AS T1 JOIN owners AS T2 ON T1.id = "
          "T2.pet_id", "SELECT count(*) FROM pets", "SELECT name FROM pets WHERE name = 'no such (name'"]
    for sql in ok:
        assert constraint.accepts(sql), sql
    bad = ["SELECT colour FROM pets", "SELECT name FROM animals", "SELECT T1.owner_name FROM pets AS T1 WHERE "
           "T1.owner_name = 'x'", "SELECT name FROM pets)", "SELECT pets.colour FROM pets"]
    for sql in bad:
        assert not constraint.accepts(sql), sql
    # token by token: the end of text is refused inside a string or an open parenthesis
    tokenizer = tiny[1]
    state = constraint.start()
    for token in tokenizer("SELECT name FROM pets WHERE name = 'Rex", add_special_tokens=False).input_ids:
        state = constraint.advance(state, token)
    assert state is not None and constraint.advance(state, tokenizer.eos_token_id) is None


def agrees_with_sqlite(db, constraint, runs, fails, fail_end: str) -> None:
    """Every query of `runs` runs in SQLite and the constraint lets it end; every one of `fails` fails in SQLite and
    the constraint refuses it (+ `fail_end`)."""
    with sqlite3.connect(db) as conn:
        for sql in runs:
            conn.execute(sql).fetchall()
            assert constraint.accepts(sql + ";"), sql
        for sql in fails:
            with pytest.raises(sqlite3.Error):
                conn.execute(sql).fetchall()
            assert not constraint.accepts(sql + fail_end), sql


def test_constraint_checks_scope_where_the_statement_ends(pets_db, tiny):
    """A query whose columns belong to a table it never reads is a valid prefix but cannot end (';' or end of text):
    the beam must add the table or lose to one that can; queries SQLite runs all end."""
    constraint = SchemaConstraint.for_database(pets_db, tiny[1])
    runs = ["SELECT owner_name FROM owners", "SELECT T1.name FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id "
            "JOIN pets AS T3 ON T3.id = T2.pet_id WHERE T3.age > 1",
            "SELECT max(name) FROM (SELECT count(*) AS name FROM owners GROUP BY pet_id)",
            "SELECT T.name FROM (SELECT owner_name AS name FROM owners) AS T",
            "SELECT name FROM pets WHERE id IN (SELECT pet_id FROM owners WHERE owners.pet_id = pets.id)",
            "SELECT name FROM pets UNION SELECT owner_name FROM owners", "SELECT p.name FROM pets p"]
    fails = ["SELECT owner_name FROM pets", "SELECT T1.name FROM owners AS T1", "SELECT T2.name FROM pets AS T1",
             "SELECT name FROM pets JOIN pets.id", "SELECT owners.owner_name FROM pets", "SELECT name"]
    agrees_with_sqlite(pets_db, constraint, runs, fails, fail_end=";")
    assert constraint.accepts("SELECT owner_name FROM pets")  # a prefix: `JOIN owners` can still come
    state = constraint.feed(constraint.start(), "SELECT owner_name FROM pets")
    assert constraint.advance(state, tiny[1].eos_token_id) is None


def test_constraint_checks_scope_per_query_part(pets_db, tiny):
    """Each part of a query (a SELECT core) reads its own tables: `X.y` written before X is defined is checked where
    the FROM defines X, a name of another UNION part's table or alias cannot end, a bare column of two tables is
    ambiguous; subqueries may still read their outer query's names. LIMIT takes integers, DISTINCT opens a list, a
    table's name is no operand (the teacher's failing beams on Spider dev wrote each of these)."""
    constraint = SchemaConstraint.for_database(pets_db, tiny[1])
    runs = ["SELECT T2.owner_name FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id",
            "SELECT T1.name FROM pets AS T1 INTERSECT SELECT T1.owner_name FROM owners AS T1",
            "SELECT name FROM pets WHERE id IN (SELECT pet_id FROM owners WHERE owner_name = name)",
            "SELECT (SELECT count(*) FROM owners WHERE pet_id = pets.id) FROM pets",
            "SELECT (SELECT max(T2.owner_name) FROM owners AS T2 WHERE T2.pet_id = T1.id) FROM pets AS T1",
            "SELECT name FROM (SELECT name FROM pets) UNION SELECT owner_name FROM owners",
            "SELECT T1.name FROM pets AS T1 JOIN pets AS T2 ON T1.id = T2.id",
            "SELECT count(DISTINCT name) FROM pets LIMIT 1 OFFSET 1", "SELECT name FROM pets LIMIT 2, 1"]
    fails = ["SELECT T1.owner_name FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id",
             "SELECT name FROM pets UNION SELECT name FROM owners",
             "SELECT T1.name FROM pets AS T1 UNION SELECT T1.name FROM owners AS T2",
             "SELECT id FROM pets JOIN owners ON pets.id = owners.pet_id",
             "SELECT name FROM pets AS T1 JOIN pets AS T2 ON T1.id = T2.id",
             "SELECT name FROM pets LIMIT 1 AND age > 1", "SELECT DISTINCT name , DISTINCT age FROM pets",
             "SELECT avg(pets) FROM pets"]
    agrees_with_sqlite(pets_db, constraint, runs, fails, fail_end=";")
    # refused where the part defines T1 for a table without the column: `AS T2` and a T1 that has it stay open
    assert not constraint.accepts("SELECT T1.owner_name FROM pets AS T1 ")
    assert constraint.accepts("SELECT T1.owner_name FROM pets AS T2 JOIN owners AS T1 ON")
    # LIMIT takes an integer and then ends; parentheses nest at most MAX_DEPTH deep
    for bad in ["SELECT name FROM pets LIMIT 1 AND", "SELECT name FROM pets LIMIT 1 = (", "SELECT name FROM pets "
                "LIMIT age", "SELECT name FROM pets LIMIT 1 OFFSET 1, 2", "SELECT name FROM pets LIMIT 1, 2, 3",
                "SELECT name FROM pets WHERE age = " + "(" * 7, "SELECT name FROM pets WHERE name = '" + "T1." * 34]:
        assert not constraint.accepts(bad), bad
    assert constraint.accepts("SELECT name FROM pets WHERE age = " + "(" * 6)
    assert constraint.accepts("SELECT name FROM pets WHERE name = '" + "x" * 100 + "'")


def test_constraint_checks_names_where_the_from_clause_ends(pets_db, tiny):
    """No table joins a query part after its FROM clause: a name the part cannot resolve is refused at the next
    clause word (WHERE, GROUP BY, HAVING, ORDER BY, LIMIT) of the outermost query, not only where the statement ends,
    which a looping beam never reaches (the teacher's failing beams ran `SELECT Maker , YEAR FROM car_makers ORDER BY
    YEAR DESC LIMIT 1 , 1000...` to the token limit, padding with whitespace); whitespace runs are bounded."""
    constraint = SchemaConstraint.for_database(pets_db, tiny[1])
    runs = ["SELECT name FROM pets WHERE age > 1 ORDER BY name",
            "SELECT T1.name FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id WHERE T2.owner_name = 'a'",
            "SELECT name FROM pets WHERE id IN (SELECT pet_id FROM owners WHERE pet_id = pets.id) GROUP BY name",
            "SELECT (SELECT count(*) FROM owners WHERE pet_id = T1.id GROUP BY pet_id) FROM pets AS T1 LIMIT 1",
            "SELECT count(*) AS n FROM pets GROUP BY age ORDER BY n", "SELECT name  ,   age FROM pets"]
    fails = ["SELECT owner_name FROM pets ORDER BY name", "SELECT T1.name FROM pets AS T2 WHERE T2.age > 1",
             "SELECT pets.name FROM owners GROUP BY owner_name", "SELECT name FROM pets AS T1 JOIN pets AS T2 "
             "ON T1.id = T2.id LIMIT 1"]
    agrees_with_sqlite(pets_db, constraint, runs, fails, fail_end="")
    assert constraint.accepts("SELECT owner_name FROM pets JOIN")  # the FROM clause is not over yet
    assert constraint.accepts("SELECT name FROM pets" + " \n" * 4)  # MAX_SPACE (8) whitespace characters
    assert not constraint.accepts("SELECT name FROM pets" + " \n" * 4 + " ")


def test_constraint_bounds_joins_and_keeps_aggregates_out_of_where(pets_db, tiny):
    """A part reads at most MAX_TABLES tables (looping beams joined the same tables until the token limit); count,
    sum, avg, total, group_concat never stand in WHERE or ON at their own depth (SQLite: misuse of aggregate); a
    name gets one alias; a function name the database has as a column is that column unless `(` follows."""
    constraint = SchemaConstraint.for_database(pets_db, tiny[1])
    joins = "SELECT count(*) FROM pets AS a" + "".join(f" JOIN pets AS {x} ON {x}.id = a.id" for x in "bcdef")
    runs = [joins, "SELECT name FROM pets WHERE id IN (SELECT count(*) FROM owners)",
            "SELECT count(*) FROM pets GROUP BY age HAVING count(*) > 1 ORDER BY sum(age)",
            "SELECT name FROM pets WHERE max(age, id) > 1"]
    fails = ["SELECT name FROM pets WHERE age > 1 AND count(*) > 1",
             "SELECT a.name FROM pets AS a JOIN owners AS b ON a.id = count(*)"]
    agrees_with_sqlite(pets_db, constraint, runs, fails, fail_end="")
    assert not constraint.accepts(joins + " JOIN pets AS g")
    assert not constraint.accepts("SELECT count(*) FROM pets, pets AS b, pets AS c, pets AS d, pets AS e, pets AS f, (")
    # one alias a name (the beams wrote `JOIN model_list AS T2_make AS T3`)
    agrees_with_sqlite(pets_db, constraint, ["SELECT p.name AS n FROM pets AS p ORDER BY n"],
                       ["SELECT a.name FROM pets AS a_name AS b", "SELECT count(*) AS n AS m FROM pets",
                        "SELECT p.name FROM pets p AS q"], fail_end="")
    # a function name that is also a column (`date`) is that column unless `(` follows
    with sqlite3.connect(pets_db) as conn:
        conn.execute("CREATE TEMP TABLE visits (pet_id INTEGER, date TEXT)")
        conn.execute("SELECT name, date FROM pets JOIN visits ON pets.id = visits.pet_id").fetchall()
        with pytest.raises(sqlite3.Error):
            conn.execute("SELECT name, date FROM pets").fetchall()
    dated = SchemaConstraint({"pets": ["id", "name", "age"], "visits": ["pet_id", "date"]},
                             constraint.token_texts, constraint.eos_id, constraint.stop_ids)
    assert not dated.accepts("SELECT name , date FROM pets;")
    assert not dated.accepts("SELECT name , date FROM pets WHERE ")
    assert dated.accepts("SELECT name , date FROM pets JOIN visits ON pets.id = visits.pet_id;")
    assert dated.accepts("SELECT date('now') FROM pets;") and constraint.accepts("SELECT name , date('now') FROM pets;")


def test_constraint_keeps_clauses_in_sql_order(pets_db, tiny):
    """Clauses once each and in SQLite's order, per parenthesis depth: a beam cannot start a second query after a
    finished one or repeat `ORDER BY ... LIMIT 1` until the token limit (what the teacher's failing beams did)."""
    constraint = SchemaConstraint.for_database(pets_db, tiny[1])
    runs = ["SELECT name FROM pets WHERE age > 1 GROUP BY name HAVING count(*) > 1 ORDER BY name LIMIT 1 OFFSET 2",
            "SELECT name FROM pets WHERE age > 1 UNION SELECT owner_name FROM owners ORDER BY 1 LIMIT 2",
            "SELECT name FROM pets WHERE age = (SELECT max(age) FROM pets ORDER BY age LIMIT 1) ORDER BY name",
            "SELECT count(*) FROM pets AS T1 JOIN owners AS T2 ON T1.id = T2.pet_id JOIN pets AS T3 ON T3.id = T1.id",
            # a parenthesis that is not a query keeps no order; a later FROM is IS [NOT] DISTINCT FROM
            "SELECT name, sum(age) OVER (PARTITION BY name ORDER BY age) FROM pets",
            "SELECT count(*) FILTER (WHERE age > 1) FROM pets", "VALUES (1) UNION SELECT age FROM pets",
            "SELECT name FROM pets WHERE age IS NOT DISTINCT FROM (SELECT max(age) FROM pets) LIMIT 2, 1"]
    fails = ["SELECT name FROM pets ORDER BY age LIMIT 1 ORDER BY age LIMIT 1", "SELECT name FROM pets LIMIT 1 "
             "SELECT name FROM pets", "SELECT name FROM pets ORDER BY age UNION SELECT owner_name FROM owners",
             "SELECT name FROM pets WHERE age > 1 JOIN owners ON pets.id = owners.pet_id",
             "SELECT name FROM pets GROUP BY name HAVING count(*) > 1 GROUP BY age"]
    # refused where the misplaced clause starts, not only where the statement ends
    agrees_with_sqlite(pets_db, constraint, runs, fails, fail_end="")
    assert constraint.accepts("SELECT name FROM pets LIMIT " + "9" * 24)
    assert not constraint.accepts("SELECT name FROM pets LIMIT " + "9" * 25)  # digits without end


def test_constraint_refuses_two_operands_in_a_row(pets_db, tiny):
    """After a number, a string, a name or `)` another operand may start only as an alias (select list, FROM); `(`
    never follows a number, a string or `)`; DISTINCT never repeats: the loops the teacher's beams ran to the token
    limit (`LIMIT 1 (SELECT ...`, `LIMIT 1. name`, `DISTINCT DISTINCT`) are refused where they start."""
    constraint = SchemaConstraint.for_database(pets_db, tiny[1])
    runs = ["SELECT age name, 'x' AS label, 2 AS two, (SELECT 1) AS one FROM pets p WHERE age > 1 ORDER BY 1 DESC "
            "LIMIT 1, 2",
            "SELECT T1.name FROM pets AS T1 JOIN (SELECT pet_id FROM owners) AS T2 ON T1.id = T2.pet_id",
            "SELECT count(DISTINCT name) FROM pets WHERE name IN ('a', 'b') AND age BETWEEN 1 AND 2",
            "SELECT DISTINCT name FROM pets UNION ALL SELECT owner_name FROM owners",
            "SELECT name FROM pets WHERE age > (SELECT avg(age) FROM pets) OR name LIKE 'a%' LIMIT 1 OFFSET 1"]
    fails = ["SELECT name FROM pets LIMIT 1 (SELECT name FROM pets", "SELECT name FROM pets LIMIT 1. name",
             "SELECT DISTINCT DISTINCT name FROM pets", "SELECT name FROM pets WHERE age = 1 name = 'a'",
             "SELECT name FROM pets WHERE name = 'a' 'b'", "SELECT name FROM pets WHERE age = 1 2",
             "SELECT count(*) (SELECT 1) FROM pets", "SELECT name FROM pets WHERE age IN (1) (2)"]
    agrees_with_sqlite(pets_db, constraint, runs, fails, fail_end="")


def test_constraint_spec_is_what_the_cpp_runner_builds_its_constraint_from(pets_db):
    assert constraint_spec(pets_db) == {"tables": {"pets": ["id", "name", "age"],
                                                   "owners": ["id", "pet_id", "owner_name"]}}


def test_constrained_beams_only_write_valid_names(pets_db, tiny):
    model, tokenizer = tiny
    constraint = SchemaConstraint.for_database(pets_db, tokenizer)
    prompt = tokenizer("SELECT name FROM ").input_ids
    start = constraint.feed(constraint.start(), "SELECT name FROM ")

    class FromHere:  # the constraint, continued from the text already in the prompt
        def start(self):
            return start

        def advance(self, state, token):
            return constraint.advance(state, token)

    candidates = hf_beam_generate(model, prompt, 3, 6, tokenizer.eos_token_id, constraint=FromHere())
    for candidate in candidates:
        text = "SELECT name FROM " + tokenizer.decode(candidate.tokens)
        assert constraint.accepts(text), text
        rest = text[len("SELECT name FROM "):].lstrip()
        assert rest == "" or rest[0] in "po", text  # a table name starts here: pets or owners


def test_guided_choice_skips_a_failing_candidate(pets_db):
    choice = choose_runnable(["SELECT colour FROM pets", "SELECT name FROM pets", "SELECT age FROM pets"], pets_db)
    assert (choice.sql, choice.index, choice.tried) == ("SELECT name FROM pets", 1, 2)
    assert choice.rejected[0]["reason"].startswith("unknown_column") or "colour" in choice.rejected[0]["reason"]
    empty = choose_runnable(["SELECT name FROM pets WHERE age > 99", "SELECT name FROM pets"], pets_db,
                            prefer_nonempty=True)
    assert empty.sql == "SELECT name FROM pets"
    none = choose_runnable(["SELECT colour FROM pets", "DELETE FROM pets"], pets_db)
    assert none.sql == "SELECT colour FROM pets" and none.error and none.tried == 2
    with sqlite3.connect(pets_db) as conn:  # nothing was written
        assert conn.execute("SELECT count(*) FROM pets").fetchone() == (2,)


def test_statement_cuts_keep_quotes_whole_and_close_parentheses():
    sql = "SELECT name FROM pets WHERE age IN (SELECT age FROM pets WHERE name = 'a b c' AND age = 5 AND ag"
    assert statement_cuts(sql) == [  # before each condition or clause, longest first, parentheses closed
        "SELECT name FROM pets WHERE age IN (SELECT age FROM pets WHERE name = 'a b c' AND age = 5)",
        "SELECT name FROM pets WHERE age IN (SELECT age FROM pets WHERE name = 'a b c')",
        "SELECT name FROM pets WHERE age IN (SELECT age FROM pets)",
        "SELECT name FROM pets"]  # never before FROM: `SELECT name` or `IN (SELECT age)` answer another question
    assert statement_cuts("SELECT name FROM pets WHERE name = 'x AND y' OR age = 1 AND") == [
        "SELECT name FROM pets WHERE name = 'x AND y' OR age = 1",  # never cut inside a string
        "SELECT name FROM pets WHERE name = 'x AND y'", "SELECT name FROM pets"]
    assert len(statement_cuts(sql, limit=3)) == 3


def test_guided_choice_cuts_a_looping_candidate_only_when_nothing_runs(pets_db):
    looping = "SELECT name FROM pets WHERE age > 3 AND age > 3 AND age > 3 AND age >"
    choice = choose_runnable([looping, "SELECT colour FROM pets"], pets_db, cut_off=[True, False])
    assert choice.sql == "SELECT name FROM pets WHERE age > 3 AND age > 3 AND age > 3"
    assert (choice.index, choice.cut_from, choice.error) == (0, looping, None)
    assert [r["index"] for r in choice.rejected] == [1]
    # a candidate that runs whole comes before any cut
    assert choose_runnable([looping, "SELECT name FROM pets"], pets_db, cut_off=[True, False]).sql == \
        "SELECT name FROM pets"
    # a candidate that ended on its own is never cut; a cut never drops the FROM of a table that does not exist
    assert choose_runnable([looping], pets_db, cut_off=[False]).error
    missing = choose_runnable(["SELECT count(*) FROM petz WHERE age > 3 AND age >"], pets_db, cut_off=[True])
    assert missing.error and missing.cut_from is None
    # a subquery cut off mid-way is closed
    nested = "SELECT name FROM pets WHERE age IN (SELECT age FROM pets WHERE name = 'Rex' ORDER BY"
    assert choose_runnable([nested], pets_db, cut_off=[True]).sql == \
        "SELECT name FROM pets WHERE age IN (SELECT age FROM pets WHERE name = 'Rex')"
    with sqlite3.connect(pets_db) as conn:
        assert conn.execute("SELECT count(*) FROM pets").fetchone() == (2,)


def test_only_a_candidate_the_limit_stopped_counts_as_cut_off(pets_db, tiny):
    """A candidate that ended on a statement end (`;`) at exactly max_new_tokens tokens is whole: never cut."""
    from sqlcopilot_core.beams import Candidate, answer_from_candidates
    from sqlcopilot_core.generate import statement_end_ids

    _, tokenizer = tiny
    stop = min(statement_end_ids(tokenizer))
    body = tokenizer("SELECT name FROM pets WHERE age > 3 AND colour").input_ids  # no column colour
    ended = Candidate(tuple(body) + (stop,), -1.0)
    limited = Candidate(tuple(body), -1.0)
    answer = answer_from_candidates([ended, limited], tokenizer, pets_db, True, max_new_tokens=len(body) + 1)
    assert answer["cut_off"] == [False, False]
    answer = answer_from_candidates([ended, limited], tokenizer, pets_db, True, max_new_tokens=len(body))
    assert answer["cut_off"] == [False, True]
    assert (answer["sql"], answer["chosen"]) == ("SELECT name FROM pets WHERE age > 3", 1) and answer["cut_from"]
