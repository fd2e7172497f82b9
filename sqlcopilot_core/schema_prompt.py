"""The schema part of the text-to-SQL prompt: a database's tables shown whole when they fit the token budget, else
filtered by relevance to the question; plus hints naming the cell values the question mentions.

    python -m sqlcopilot_core.schema_prompt --spider-dir ../shared/spider --split train --max-schema-tokens 400

Training, scoring, predict and ask all go through SchemaPrompter, so the model is asked at run time exactly what it
was trained on. Everything is deterministic: tables in creation order, ties broken by creation order.

Forms: "compact" writes `table(col, ...)` per table and one `-- joins: a.x = b.y, ...` line from the foreign keys;
"create_table" is spider.table_lines. Sample values (values_per_column) are shown only while the whole schema fits.

Filtering, when the whole schema does not fit (question ignored otherwise, so its text is cached per database):
- column relevance: the share of a column name's words (snake/camelCase split, lightly stemmed) the question says,
  + 2 when the question mentions one of the column's cell values;
- table relevance: 3 x the share of the table name's words the question says + its best column + 0.3 x the next
  three; a table's priority adds 0.4 x its two best foreign-key neighbours', so a join path stays visible;
- drop order: tables of priority 0 whole, then columns of no relevance before their table (keep score = table
  priority - 0.5), then tables by priority; key columns go only with their table, and the top table never goes.
The budget is checked on token counts of the pieces added up, then on the real count of the final text.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlcopilot_core.spider import Schema, Table, load_split, read_schema, sample_values, table_lines

FORMS = ("compact", "create_table")
HINT_TOKEN_BUDGET = 64  # value hints are a few short lines; longer ones are dropped rather than crowd the question
MAX_VALUE_CHARS = 40  # cell values longer than this are neither indexed nor hinted
MAX_VALUES_PER_COLUMN = 3000  # distinct text values indexed per column
MAX_NGRAM = 6  # longest word n-gram of a question compared with cell values

STOP_WORDS = frozenset("""
a about above after all also an and any are as at be been before being below between both but by can could did do
does each else every for from further had has have having he her here hers him his how i if in into is it its itself
just me more most much my no nor not of off on once only or other our out over own same she should so some such
than that the their theirs them then there these they this those through to too under until up very was we were
what when where which while who whom whose why will with would you your yours
show list give find tell return display many number count total please name names
""".split())
SQL_RESERVED = frozenset("""
abort action add after all alter and as asc autoincrement before begin between by cascade case cast check collate
column commit constraint create cross current_date current_time current_timestamp default deferrable delete desc
distinct drop each else end escape except exists foreign from full glob group having if in index inner insert
intersect into is isnull join key left like limit match natural no not notnull null of offset on or order outer
primary references right rollback select set table then to transaction trigger union unique update using values
view when where
""".split())


@dataclass(frozen=True)
class PromptSettings:
    """How the schema part of a prompt is written; a trained model carries the settings it was trained with."""

    form: str = "compact"
    """"compact": one `table(col, ...)` line per table and one `-- joins:` line; "create_table": CREATE TABLE text."""
    max_schema_tokens: int | None = 400
    """Budget of the schema text in tokens; over it, the schema is filtered by relevance (None = no limit)."""
    value_hints: int = 3
    """At most this many `-- table.column = 'value'` lines naming cell values the question mentions (0 = none)."""
    values_per_column: int = 0
    """Sample values shown per column in the schema text (0 = none); the first thing dropped when over budget."""

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"PromptSettings.form must be one of {list(FORMS)}, got {self.form!r}")
        if self.max_schema_tokens is not None and (isinstance(self.max_schema_tokens, bool)
                                                   or not isinstance(self.max_schema_tokens, int)
                                                   or self.max_schema_tokens < 1):
            raise ValueError(f"PromptSettings.max_schema_tokens must be an integer >= 1 or None, "
                             f"got {self.max_schema_tokens!r}")
        for name in ("value_hints", "values_per_column"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PromptSettings.{name} must be an integer >= 0, got {value!r}")


# ---------------------------------------------------------------------------------------------------- words

def split_name(name: str) -> list[str]:
    """Words of a table or column name: snake_case, camelCase and spaces split, lowercased."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name))
    return [w.lower() for w in re.findall(r"[A-Za-z]+|[0-9]+", spaced)]


def stem(word: str) -> str:
    """Light stemming, the same on both sides of a comparison: plurals, -ing, -ed."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and re.search(r"(ss|x|ch|sh|z)es$", word):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    return word


def content_stems(words: list[str]) -> list[str]:
    """Stems of the words that carry meaning (stop words out; all of them if nothing else is left)."""
    kept = [w for w in words if w not in STOP_WORDS and w != "id"] or words
    return [stem(w) for w in kept]


def name_match(name_stems: list[str], question_stems: frozenset[str]) -> float:
    """Share of a name's words the question says: 1 per exact stem, 0.5 when one is a prefix (3+ chars) of the other."""
    if not name_stems:
        return 0.0
    score = 0.0
    for word in name_stems:
        if word in question_stems:
            score += 1.0
        elif len(word) >= 3 and any(len(q) >= 3 and (q.startswith(word) or word.startswith(q))
                                    for q in question_stems):
            score += 0.5
    return score / len(name_stems)


def normalize_value(text: str) -> str:
    """The form cell values and question n-grams are compared in: lowercase alphanumeric words, single spaces."""
    return " ".join(re.findall(r"[0-9a-z]+", text.lower()))


def quoted_strings(question: str) -> list[str]:
    """'...' and "..." spans of a question (an apostrophe inside a word, as in singer's, does not open one)."""
    found = re.findall(r"(?<!\w)'([^']+?)'(?!\w)|\"([^\"]+)\"", question)
    return [a or b for a, b in found if (a or b).strip()]


def quote_name(name: str) -> str:
    """A table or column name as SQLite needs it written: double-quoted when not a plain identifier."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.lower() not in SQL_RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------------- database

@dataclass(frozen=True)
class Selection:
    """What a schema text shows: tables (creation order) and per table its columns (table order); whole = all."""

    tables: tuple[str, ...]
    columns: dict[str, tuple[str, ...]]
    whole: bool


@dataclass
class _Database:
    """What is read once per database: the schema, its name words, join keys, token costs, the value index."""

    schema: Schema
    joins: list[tuple[str, str, str, str]]  # (table, column, referenced table, referenced column), deduplicated
    key_columns: dict[str, frozenset[str]]  # per table: primary and foreign key columns (never dropped)
    table_stems: dict[str, list[str]]
    column_stems: dict[tuple[str, str], list[str]]
    whole_text: str | None = None  # set when the whole schema fits the budget
    values: dict[str, list[tuple[str, str, str]]] | None = None  # normalized value -> [(table, column, stored)]
    costs: dict | None = None  # token cost estimates, computed when the schema has to be filtered


def read_joins(schema: Schema) -> list[tuple[str, str, str, str]]:
    """Foreign keys resolved to real table/column names; a reference to nothing that exists is left out."""
    by_lower = {t.name.lower(): t for t in schema.tables}
    joins = []
    for table in schema.tables:
        for column, ref_table, ref_column in table.foreign_keys:
            target = by_lower.get(ref_table.lower())
            if target is None:
                continue
            if not ref_column:
                if len(target.primary_key) != 1:
                    continue
                ref_column = target.primary_key[0]
            own = {c.name.lower(): c.name for c in table.columns}
            theirs = {c.name.lower(): c.name for c in target.columns}
            if column.lower() in own and ref_column.lower() in theirs:
                join = (table.name, own[column.lower()], target.name, theirs[ref_column.lower()])
                if join not in joins:
                    joins.append(join)
    return joins


def read_text_values(db_path: Path, schema: Schema) -> dict[str, list[tuple[str, str, str]]]:
    """Index of the distinct short text values of every column: normalized value -> [(table, column, stored)]."""
    index: dict[str, list[tuple[str, str, str]]] = {}
    with sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True) as conn:
        conn.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
        for table in schema.tables:
            for column in table.columns:
                try:
                    rows = conn.execute(
                        f'SELECT DISTINCT "{column.name}" FROM "{table.name}" WHERE typeof("{column.name}") = '
                        f"'text' AND length(\"{column.name}\") <= ? LIMIT ?",
                        (MAX_VALUE_CHARS, MAX_VALUES_PER_COLUMN)).fetchall()
                except sqlite3.Error:
                    continue
                for (value,) in rows:
                    key = normalize_value(value)
                    if key and "\ufffd" not in value:
                        entries = index.setdefault(key, [])
                        if not any(t == table.name and c == column.name for t, c, _ in entries):
                            entries.append((table.name, column.name, value))
    return index


# ---------------------------------------------------------------------------------------------------- prompter

class SchemaPrompter:
    """Schema texts and value hints of questions about databases under one PromptSettings, cached per database.

    `tokenizer` (a Hugging Face tokenizer) counts tokens for the budget; without one a token is 4 characters.
    """

    def __init__(self, settings: PromptSettings, tokenizer=None):
        self.settings, self.tokenizer = settings, tokenizer
        self._databases: dict[str, _Database] = {}

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return (len(text) + 3) // 4
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    # ---- the public surface

    def schema_text(self, db_path, question: str) -> str:
        """The schema part of the prompt: the whole schema when it fits the budget (question ignored), else filtered."""
        db = self._database(db_path)
        if db.whole_text is not None:
            return db.whole_text
        return self.render(db, self._filtered(db_path, db, question))

    def selection(self, db_path, question: str) -> Selection:
        """The tables and columns schema_text shows for this question."""
        db = self._database(db_path)
        if db.whole_text is not None:
            return self._whole_selection(db)
        return self._filtered(db_path, db, question)

    def schema(self, db_path) -> Schema:
        """The database's schema as read (once) by this prompter."""
        return self._database(db_path).schema

    def fits_whole(self, db_path) -> bool:
        """True when every table and column fits the budget, so schema_text does not depend on the question."""
        return self._database(db_path).whole_text is not None

    def value_hints(self, db_path, question: str) -> str:
        """Lines `-- table.column = 'Value'` (each ending in a newline) for cell values the question mentions, or ""."""
        if not self.settings.value_hints:
            return ""
        lines, used = [], 0
        for table, column, value in self._value_matches(db_path, question):
            line = f"-- {quote_name(table)}.{quote_name(column)} = {sql_literal(value)}\n"
            cost = self.count_tokens(line)
            if used + cost > HINT_TOKEN_BUDGET:
                break
            lines.append(line)
            used += cost
            if len(lines) == self.settings.value_hints:
                break
        return "".join(lines)

    # ---- reading a database once

    def _database(self, db_path) -> _Database:
        key = str(Path(db_path).resolve())
        if key not in self._databases:
            schema = read_schema(db_path)
            joins = read_joins(schema)
            keys = {t.name: frozenset(t.primary_key) | {c for tt, c, _, _ in joins if tt == t.name}
                    | {rc for _, _, rt, rc in joins if rt == t.name} for t in schema.tables}
            db = _Database(schema, joins, keys,
                           {t.name: content_stems(split_name(t.name)) for t in schema.tables},
                           {(t.name, c.name): content_stems(split_name(c.name)) for t in schema.tables
                            for c in t.columns})
            budget = self.settings.max_schema_tokens
            values = self._sample_values(db_path, schema) if self.settings.values_per_column else None
            for shown_values in ([values, None] if values else [None]):
                text = self.render(db, self._whole_selection(db), shown_values)
                if budget is None or self.count_tokens(text) <= budget:
                    db.whole_text = text
                    break
            self._databases[key] = db
        return self._databases[key]

    def _sample_values(self, db_path, schema: Schema) -> dict[str, dict[str, list[str]]]:
        return {t.name: {c.name: sample_values(Path(db_path), t.name, c.name, self.settings.values_per_column)
                         for c in t.columns} for t in schema.tables}

    def _values(self, db_path, db: _Database) -> dict[str, list[tuple[str, str, str]]]:
        if db.values is None:
            db.values = read_text_values(Path(db_path), db.schema)
        return db.values

    @staticmethod
    def _whole_selection(db: _Database) -> Selection:
        return Selection(tuple(t.name for t in db.schema.tables),
                         {t.name: tuple(c.name for c in t.columns) for t in db.schema.tables}, True)

    # ---- rendering

    def render(self, db: _Database, selection: Selection, values: dict | None = None) -> str:
        """The schema text of a selection in the settings' form (values: per table, per column, sample values)."""
        tables = [t for t in db.schema.tables if t.name in selection.tables]
        kept = set(selection.tables)
        if self.settings.form == "create_table":
            blocks = []
            for table in tables:
                columns = set(selection.columns[table.name])
                shown = dataclasses.replace(
                    table, columns=tuple(c for c in table.columns if c.name in columns),
                    foreign_keys=tuple(fk for fk in table.foreign_keys
                                       if fk[1].lower() in {k.lower() for k in kept}))
                blocks.append(table_lines(shown, (values or {}).get(table.name)))
            return "\n".join(blocks)
        lines = [self._compact_line(table, selection.columns[table.name], (values or {}).get(table.name))
                 for table in tables]
        joins = [f"{quote_name(t)}.{quote_name(c)} = {quote_name(rt)}.{quote_name(rc)}"
                 for t, c, rt, rc in db.joins if t in kept and rt in kept]
        if joins:
            lines.append("-- joins: " + ", ".join(joins))
        return "\n".join(lines)

    @staticmethod
    def _compact_line(table: Table, columns: tuple[str, ...], values: dict[str, list[str]] | None) -> str:
        parts = []
        for name in columns:
            text = quote_name(name)
            if values and values.get(name):
                text += " [" + ", ".join(v if re.fullmatch(r"-?\d+(\.\d+)?", v) else sql_literal(v)
                                         for v in values[name]) + "]"
            parts.append(text)
        return f"{quote_name(table.name)}({', '.join(parts)})"

    # ---- relevance

    def _value_matches(self, db_path, question: str) -> list[tuple[str, str, str]]:
        """(table, column, stored value) the question mentions: quoted strings, then longest word n-grams first."""
        db = self._database(db_path)
        index = self._values(db_path, db)
        order = {(t.name, c.name): i for i, (t, c) in
                 enumerate((t, c) for t in db.schema.tables for c in t.columns)}
        found: list[tuple[str, str, str]] = []

        def add(key: str):
            for entry in sorted(index.get(key, []), key=lambda e: order[(e[0], e[1])]):
                if entry not in found:
                    found.append(entry)

        for text in quoted_strings(question):
            add(normalize_value(text))
        words = re.findall(r"[0-9a-z]+", question.lower())
        taken = [False] * len(words)
        for size in range(min(MAX_NGRAM, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                if any(taken[start:start + size]):
                    continue
                gram = words[start:start + size]
                key = " ".join(gram)
                if len(key) < 3 or key.isdigit() or all(w in STOP_WORDS for w in gram) or key not in index:
                    continue
                add(key)
                taken[start:start + size] = [True] * size
        return found

    def _scores(self, db_path, db: _Database, question: str):
        """(table priority, column relevance) for a question: the signals in the module's docstring."""
        question_stems = frozenset(stem(w) for w in re.findall(r"[a-z0-9]+", question.lower())
                                   if w not in STOP_WORDS)
        column_score = {key: name_match(stems, question_stems) for key, stems in db.column_stems.items()}
        for table, column, _ in self._value_matches(db_path, question):
            column_score[(table, column)] += 2.0
        table_score = {}
        for table in db.schema.tables:
            own = sorted((column_score[(table.name, c.name)] for c in table.columns), reverse=True)
            table_score[table.name] = (3.0 * name_match(db.table_stems[table.name], question_stems)
                                       + (own[0] if own else 0.0) + 0.3 * sum(own[1:4]))
        neighbours: dict[str, set[str]] = {t.name: set() for t in db.schema.tables}
        for t, _, rt, _ in db.joins:
            if t != rt:
                neighbours[t].add(rt)
                neighbours[rt].add(t)
        priority = {}
        for name, score in table_score.items():
            near = sorted((table_score[n] for n in neighbours[name]), reverse=True)
            priority[name] = score + 0.4 * sum(near[:2])
        return priority, column_score

    # ---- filtering to the budget

    def _costs(self, db: _Database) -> dict:
        """Token cost estimates: per table its fixed part (name + key columns), per column, per join item."""
        if db.costs is None:
            costs = {"table": {}, "column": {}, "join": {}}
            for table in db.schema.tables:
                keys = tuple(c.name for c in table.columns if c.name in db.key_columns[table.name])
                fixed = self.count_tokens(self.render(db, Selection((table.name,), {table.name: keys}, False)))
                costs["table"][table.name] = fixed + 1  # + the newline between tables
                for column in table.columns:
                    if column.name not in db.key_columns[table.name]:
                        piece = (f", {quote_name(column.name)}" if self.settings.form == "compact"
                                 else f",\n  {column.name} {column.type}")
                        costs["column"][(table.name, column.name)] = self.count_tokens(piece)
            for join in db.joins:
                t, c, rt, rc = join
                costs["join"][join] = self.count_tokens(f"{quote_name(t)}.{quote_name(c)} = "
                                                        f"{quote_name(rt)}.{quote_name(rc)}, ")
            costs["joins_line"] = self.count_tokens("\n-- joins: ")
            db.costs = costs
        return db.costs

    def _filtered(self, db_path, db: _Database, question: str) -> Selection:
        """Drop the least relevant columns and tables until the text fits; the top table always stays."""
        budget = self.settings.max_schema_tokens
        priority, column_score = self._scores(db_path, db, question)
        creation = {t.name: i for i, t in enumerate(db.schema.tables)}
        ranked = sorted(creation, key=lambda name: (-priority[name], creation[name]))
        top = ranked[0]
        # Drop order: tables nothing points to go first, whole; then a column without relevance goes before its
        # table (keep score = table priority - 0.5), a relevant column only with its table; among equals, later
        # tables and later columns go first.
        items = []
        for table in db.schema.tables:
            keep_table = float("inf") if table.name == top else priority[table.name] if priority[table.name] else -1.0
            items.append((keep_table, -creation[table.name], 1, 0, table.name, None))
            for position, column in enumerate(table.columns):
                if column.name in db.key_columns[table.name]:
                    continue
                keep = priority[table.name] + column_score[(table.name, column.name)] - 0.5
                if table.name == top:
                    keep = 1e6 + column_score[(table.name, column.name)]  # only when the top table alone is too big
                items.append((keep, -creation[table.name], 0, -position, table.name, column.name))
        items.sort()
        tables = {t.name for t in db.schema.tables}
        columns = {(t.name, c.name) for t in db.schema.tables for c in t.columns}
        costs = self._costs(db)

        def estimate() -> int:
            joins = [j for j in db.joins if j[0] in tables and j[2] in tables]
            return (sum(costs["table"][t] for t in tables)
                    + sum(cost for (t, c), cost in costs["column"].items() if t in tables and (t, c) in columns)
                    + (costs["joins_line"] + sum(costs["join"][j] for j in joins) if joins else 0))

        def selection() -> Selection:
            return Selection(tuple(t.name for t in db.schema.tables if t.name in tables),
                             {t.name: tuple(c.name for c in t.columns if (t.name, c.name) in columns)
                              for t in db.schema.tables if t.name in tables}, False)

        pending = iter(items)
        for _, _, is_table, _, table, column in pending:
            if table not in tables:
                continue
            if is_table:
                tables.discard(table)
            else:
                columns.discard((table, column))
            if estimate() <= budget:
                break
        # The estimate adds up pieces counted apart; the real count decides, dropping further while over.
        while self.count_tokens(self.render(db, selection())) > budget:
            item = next(pending, None)
            if item is None:
                break
            _, _, is_table, _, table, column = item
            if table in tables:
                if is_table:
                    tables.discard(table)
                else:
                    columns.discard((table, column))
        return selection()


# ---------------------------------------------------------------------------------------------------- gold SQL

_SQL_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|
                            <=|>=|!=|<>|\S""", re.VERBOSE)
_CLAUSE_WORDS = frozenset("""select from where group order by having limit join on as and or not in like between
union intersect except distinct asc desc is null exists case when then else end inner left right outer cross natural
using cast""".split())


def _sql_tokens(sql: str, names: set[str]) -> list[str]:
    """Lowercased tokens of a SQL text; string literals become "'" (a double-quoted name of the schema stays a name)."""
    tokens = []
    for token in _SQL_TOKEN.findall(sql):
        if token[0] == "'":
            tokens.append("'")
        elif token[0] == '"':
            inner = token[1:-1].replace('""', '"').lower()
            tokens.append(inner if inner in names else "'")
        elif token[0] in "`[":
            tokens.append(token[1:-1].lower())
        else:
            tokens.append(token.lower())
    return tokens


def _sql_scopes(tokens: list[str], table_columns: dict[str, set[str]]) -> list[dict]:
    """One scope per SELECT: its parent scope, FROM tables, aliases and column references (qualifier, column).

    A SELECT inside parentheses opens a child scope, closed by its parenthesis; a SELECT after a set operator at the
    same depth opens a sibling.
    """
    scopes: list[dict] = []
    stack: list[int] = []
    depth = 0

    def new_scope(parent):
        scopes.append({"depth": depth, "parent": parent, "aliases": {}, "tables": [], "refs": [], "in_from": False})
        return len(scopes) - 1

    current = new_scope(None)
    i = 0
    while i < len(tokens):
        token, scope = tokens[i], scopes[current]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            while stack and scopes[current]["depth"] > depth:
                current = stack.pop()
        elif token == "select":
            if scope["depth"] < depth:
                stack.append(current)
                current = new_scope(current)
            elif scope["tables"] or scope["refs"]:  # a set operator ended the previous SELECT at this depth
                current = new_scope(scope["parent"])
        elif token in ("from", "join") or (token == "," and scope["in_from"]):
            scope["in_from"] = True
            if nxt in table_columns:
                scope["tables"].append(nxt)
                alias_at = i + 3 if i + 2 < len(tokens) and tokens[i + 2] == "as" else i + 2
                alias = tokens[alias_at] if alias_at < len(tokens) else ""
                if re.fullmatch(r"[a-z_][a-z0-9_]*", alias) and alias not in _CLAUSE_WORDS:
                    scope["aliases"][alias] = nxt
                    i = alias_at
                else:
                    i += 1
        elif token in ("where", "group", "order", "having", "limit", "on", "union", "intersect", "except"):
            scope["in_from"] = False
        elif token == "as":
            i += 1  # a select-expression alias, not a column
        elif re.fullmatch(r"[a-z_][a-z0-9_ ]*", token):
            if nxt == ".":
                scope["refs"].append((token, tokens[i + 2] if i + 2 < len(tokens) else ""))
                i += 2
            elif nxt != "(" and token not in _CLAUSE_WORDS:
                scope["refs"].append((None, token))
        i += 1
    return scopes


def gold_tables_columns(sql: str, schema: Schema) -> tuple[set[str], set[str]]:
    """(tables, "table.column"s) of the schema a SQL query uses, lowercased; aliases and bare columns resolved.

    A qualified column `T1.col` goes to the table aliased T1 (or named T1) in its scope or an enclosing one; a bare
    column to the tables of its scope's FROM clause that have it, else to those of the nearest enclosing scope.
    """
    table_columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
    names = set(table_columns) | {c for cols in table_columns.values() for c in cols}
    scopes = _sql_scopes(_sql_tokens(sql, names), table_columns)
    used_tables = {t for scope in scopes for t in scope["tables"]}
    used_columns: set[str] = set()
    for index, scope in enumerate(scopes):
        chain, at = [], index
        while at is not None:
            chain.append(scopes[at])
            at = scopes[at]["parent"]
        for qualifier, column in scope["refs"]:
            if qualifier is not None:
                table = next((s["aliases"][qualifier] for s in chain if qualifier in s["aliases"]),
                             qualifier if qualifier in table_columns else None)
                if table is not None and column in table_columns[table]:
                    used_columns.add(f"{table}.{column}")
                continue
            for s in chain:
                owners = [t for t in dict.fromkeys(s["tables"]) if column in table_columns[t]]
                if owners:
                    used_columns.update(f"{t}.{column}" for t in owners)
                    break
    return used_tables, used_columns


# ---------------------------------------------------------------------------------------------------- statistics

def schema_stats(spider_dir, split: str, settings: PromptSettings, tokenizer=None, progress: bool = True) -> dict:
    """How well the schema part serves a split: gold table/column recall, prompt tokens, share filtered.

    Recall is the share of examples whose gold SQL's tables (columns) all appear in that example's schema text.
    prompt_tokens counts the whole prompt, prompting.build_prompt(schema text, question, value hints), with the
    tokenizer (4 characters a token without one).
    """
    from tqdm.auto import tqdm

    from sqlcopilot_core.prompting import build_prompt  # imports this module: import here, not at the top

    examples = load_split(spider_dir, split)
    if not examples:
        raise ValueError(f"{spider_dir} {split}: no examples with a database")
    prompter = SchemaPrompter(settings, tokenizer)
    table_hits = column_hits = truncated = 0
    lengths = []
    for example in tqdm(examples, desc=f"schema-stats {split}", unit="example", disable=not progress):
        schema = prompter.schema(example.db_path)
        shown = prompter.selection(example.db_path, example.question)
        tables, columns = gold_tables_columns(example.query, schema)
        shown_tables = {t.lower() for t in shown.tables}
        shown_columns = {f"{t.lower()}.{c.lower()}" for t, cols in shown.columns.items() for c in cols}
        table_hits += tables <= shown_tables
        column_hits += columns <= shown_columns
        truncated += not shown.whole
        text = build_prompt(prompter.schema_text(example.db_path, example.question), example.question,
                            prompter.value_hints(example.db_path, example.question))
        lengths.append(prompter.count_tokens(text))
    lengths.sort()
    return {"n": len(examples),
            "gold_table_recall": round(table_hits / len(examples), 4),
            "gold_column_recall": round(column_hits / len(examples), 4),
            "prompt_tokens": {"median": statistics.median(lengths),
                              "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
                              "max": lengths[-1]},
            "truncated_share": round(truncated / len(examples), 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Gold-SQL recall and prompt lengths of the schema prompt.")
    parser.add_argument("--spider-dir", required=True)
    parser.add_argument("--split", default="dev", choices=("dev", "train"))
    parser.add_argument("--form", default="compact", choices=FORMS)
    parser.add_argument("--max-schema-tokens", type=int, default=400, help="0 = no limit")
    parser.add_argument("--value-hints", type=int, default=3)
    parser.add_argument("--values-per-column", type=int, default=0)
    parser.add_argument("--tokenizer", help="a model folder whose tokenizer counts tokens (default: 4 chars a token)")
    args = parser.parse_args(argv)
    settings = PromptSettings(args.form, args.max_schema_tokens or None, args.value_hints, args.values_per_column)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    started = time.perf_counter()
    stats = schema_stats(args.spider_dir, args.split, settings, tokenizer)
    print(json.dumps(stats, indent=2))
    print(f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return stats


if __name__ == "__main__":
    main()
