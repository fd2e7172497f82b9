"""Schema-constrained decoding: a token is allowed only if the SQL it completes can still be valid on this database.

    python -m sqlcopilot_core.sqlconstraint ../shared/spider dev     # every gold query, token by token (must all pass)

A prefix check over the text the model has written, one character at a time, with a small state per beam
(`State`). What it enforces (names compared case-insensitively, over the whole database's schema, not only the
prompt's part of it):

- lexical structure: quotes close, parentheses never close more than they opened, and the statement ends (end of
  text, ';' or a blank line) outside a string, with every parenthesis closed;
- after FROM / JOIN (and a comma in a FROM list) an identifier must become a table of the database;
- `X.y`: when X is a table or an alias the query defined (AS, or a name right after a table in FROM), y must
  become one of that table's columns; when X is not known yet (Spider writes `SELECT T1.name FROM singer AS T1`)
  y must become a column of some table, and X must look like an alias (a table name, a defined alias, or a short
  name such as T1);
- any other bare identifier must become a column, a table, an alias or a SQL keyword or function;
- a table after FROM / JOIN is not followed by `.` (`JOIN t.c` reads as database `t`, table `c`);
- clause order, per parenthesis depth: SELECT opens a query (at the start, after `(` or a set operator), then
  FROM (JOIN, ON), WHERE, GROUP BY, HAVING, ORDER BY, LIMIT, OFFSET, each at most once and in that order, and a set
  operator never after ORDER BY or LIMIT (SQLite refuses each of these); a depth whose first clause word is not
  SELECT (`OVER (ORDER BY ...)`, `FILTER (WHERE ...)`, VALUES) keeps no order, and a FROM after the FROM clause is
  `IS [NOT] DISTINCT FROM`; a number is at most 24 characters. Beams that would start a second query after a
  finished one, or repeat `ORDER BY ... LIMIT 1` until the token limit, stop there;
- two operands in a row: after a number, a string or quoted name, a name or `)`, a number is refused, and a name
  or a string only in the select list or the FROM clause (where it is an alias); `(` never follows a number, a
  string or `)`; DISTINCT / ALL come only after SELECT, `(`, a set operator, IS or NOT; a table's name is no
  operand (unless a column has it). (Beams that looped `LIMIT 1 (SELECT ... LIMIT 1 (`,
  `LIMIT 1. col`, `DISTINCT DISTINCT ...` until the token limit stop there.)
- where the statement ends (the scope check, `_end`): every bare column name is a column of a table the statement
  names (anywhere in it: subqueries may read their outer query's tables), an alias or a result name it defines
  (anywhere: `SELECT max(name) FROM (SELECT count(*) AS name FROM owners)`), and every `X.y` has an X that is a
  table the statement names or an alias it defines for one, with y a column of that table (any y for an alias of a
  subquery). A query whose columns belong to a table it never reads cannot end: the beam must go on (add the JOIN)
  or lose to one that can. The check is a union over the whole statement, so it can accept a column out of its
  scope (the execution-guided choice catches those) but it does not refuse a query SQLite runs (every gold query of
  Spider dev passes; of train, all but the three that SQLite refuses too).
- per query part (`_resolve`): a column name is also checked against the part of the query it is written in (one
  SELECT core: a set operator starts the next part, a parenthesis an inner one). `X.y` written before X is defined
  (`SELECT T1.name FROM concert AS T1`) is checked where the part defines X: a FROM that gives T1 a table without
  `name` is refused there, so the beam can still name T1 another table or the right one `AS T1`. Where a part ends
  (a set operator, its `)`, the statement's end) each bare column and `table.y` of it must be a column of a table
  the part reads (any column when it reads a subquery), a result name or an alias, and a bare column of two tables
  the part reads (self-joins too) is ambiguous; what a part cannot resolve moves to the part around it (correlated
  subqueries), and at the outermost part it cannot end. `X.y` may not name an alias of another part of a UNION /
  INTERSECT / EXCEPT (SQLite: no such column). A part's names are also checked where its FROM clause is over (WHERE,
  GROUP BY, HAVING, ORDER BY or LIMIT after it): no table can join the part after that, so at the outermost part
  `SELECT Maker , YEAR FROM car_makers ORDER BY` is refused at ORDER (car_makers has no YEAR) instead of running on
  to the token limit, and `SELECT T1.x FROM t AS T1_x WHERE` at WHERE (T1 is never defined).
- LIMIT and OFFSET take an integer: after LIMIT n only OFFSET, `, m`, `)` or the statement's end may come (beams
  looped `LIMIT 1 AND T2.x = T3.y AND ...` or `LIMIT 100000 = (SELECT ...` until the token limit); parentheses nest
  at most MAX_DEPTH deep (Spider's gold queries: 3; looping beams nested `= (SELECT ... = (SELECT ...`), a string
  or quoted name holds at most MAX_STRING characters (gold: 39; beams looped `"T1.T2.T2.T2...` until the limit).
- a query part reads at most MAX_TABLES tables (gold: 5; looping beams joined the same tables again and again,
  waiting for an alias that never came); count / sum / avg / total / group_concat never stand in WHERE or ON at
  their own depth (SQLite: misuse of aggregate; a subquery there is its own depth), unless the database has a
  column of that name; a name gets one alias (no `AS T2_make AS T3`); a function name that is also a column of the
  database (`date`, `time`, `total`) is that column, checked like any other, unless `(` follows at once;
- whitespace: at most MAX_SPACE characters of it in a row outside strings (gold: 3); a beam that can neither go on
  nor end stops there instead of padding with spaces and newlines until the token limit.
"""

from __future__ import annotations

import bisect
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

FUNCTIONS = frozenset("""
count sum avg min max total group_concat abs round length lower upper substr substring instr trim ltrim replace
coalesce ifnull nullif iif typeof printf format char hex unicode random date time datetime julianday strftime
unixepoch quote zeroblob likely unlikely
""".split())
"""Keywords that are functions: one the database also has as a column (`date`, `time`, `total`) is that column
unless `(` follows at once (`SELECT name , date FROM ship` names a column, which ship must have)."""
KEYWORDS = frozenset("""
select from where group by order having limit offset join inner left right full outer cross natural on using as and
or not in like glob regexp match between is isnull notnull null distinct all union intersect except exists case when
then else end asc desc with recursive values collate nocase binary rtrim escape cast true false current_date
current_time current_timestamp over partition rows range filter window integer int real text numeric float double
varchar
""".split()) | FUNCTIONS
SORTED_KEYWORDS = sorted(KEYWORDS)
CLAUSE_WORDS = frozenset("select where group order having limit on union intersect except by offset".split())
SET_OPERATORS = frozenset("union intersect except".split())
SQL_PUNCTUATION = frozenset(".,;()*=<>!+-/%|&~'\"`[]")
SHORT_ALIAS = re.compile(r"[a-z]{1,2}\d*")
# clause order within one query: a clause word may come only while the query's rank is in its range; it sets the rank
CLAUSE_RANKS = {"select": (0, 0, 1), "from": (1, 1, 2), "join": (2, 2, 2), "on": (2, 2, 2), "where": (1, 2, 3),
                "group": (1, 3, 4), "having": (1, 4, 5), "order": (1, 5, 6), "limit": (1, 6, 7),
                "offset": (7, 7, 8), "union": (1, 5, 0), "intersect": (1, 5, 0), "except": (1, 5, 0)}
"""word: (lowest rank, highest rank, new rank); rank 0: no clause yet (start, after `(` or a set operator)."""
FREE_RANK = 99
"""The rank of a depth that is not a query: a parenthesis (or a text) whose first clause word is not SELECT, such as
`OVER (ORDER BY ...)`, `FILTER (WHERE ...)`, `VALUES (...)`: no order is kept there."""
MAX_NUMBER = 24
MAX_DEPTH = 6
MAX_STRING = 100
"""Characters of a string or quoted name at most (Spider's gold queries: 39; looping beams wrote `"T1.T2.T2.T2...`)."""
MAX_SPACE = 8
"""Whitespace characters in a row outside strings at most (Spider's gold queries: 3; beams that could not end padded
`LIMIT 1 , 100 \n      \n \n ...` with whitespace until the token limit)."""
MAX_TABLES = 6
"""Tables (and subqueries) one query part reads at most (Spider's gold queries: 5; looping beams joined
`JOIN cars_data AS T5 ON ... JOIN cars_data AS T6 ON ...` until the token limit, waiting for an alias that never came)."""
AGGREGATES = frozenset("count sum avg total group_concat".split())
"""Aggregate functions that SQLite refuses in WHERE and ON (`misuse of aggregate`); min / max with two arguments are
scalar functions there, so they are not checked."""
NO_AGGREGATE_CLAUSES = frozenset({"where", "on"})
FROM_ENDS = frozenset("where group having order limit".split())
"""Clause words after which a query part's FROM clause is over: the part's names are checked there (`_resolve`)."""
LIMIT_CLAUSES = frozenset({"limit", "offset"})
DISTINCT_BEFORE = frozenset({"select", "union", "intersect", "except", "is", "not"})
SUBQUERY = "("
"""In a part's tables (State.parts): the part reads a subquery, whose columns the constraint does not know."""
# what can end an operand (another operand cannot follow it), and the clauses where a name or string after one is an
# alias
OPERAND_ENDS = frozenset({"num", "str", "name", "alias", ")"})
ALIAS_CLAUSES = frozenset({"select", "from"})


def next_rank(rank: int, word: str) -> int | None:
    """The clause-order rank after clause word `word` (a CLAUSE_RANKS key), or None when it cannot come here."""
    if rank == FREE_RANK or (rank == 0 and word != "select"):
        return FREE_RANK
    if word == "from" and rank >= 2:
        return rank  # IS [NOT] DISTINCT FROM
    low, high, new = CLAUSE_RANKS[word]
    return new if low <= rank <= high else None


def _has_prefix(names: list[str], prefix: str) -> bool:
    """Whether some name of the sorted list starts with `prefix`."""
    at = bisect.bisect_left(names, prefix)
    return at < len(names) and names[at].startswith(prefix)


@dataclass(frozen=True)
class State:
    mode: int = 0  # 0 SQL, 1 '...', 2 "...", 3 `...`, 4 [...]
    quoted: int = 0  # characters of the string or quoted name being written
    depth: int = 0
    word: str = ""  # the identifier or number being written (lowercase)
    qualifier: str | None = None  # X of `X.` before the word
    context: str = ""  # "table": a table name must come; "alias": a name is being defined; "after_table": either
    clauses: tuple[str, ...] = ("",)  # per depth, the clause being written
    ranks: tuple[int, ...] = (0,)  # per depth, the rank (CLAUSE_RANKS) of the last clause word
    aliases: tuple[tuple[int, str, str | None], ...] = ()  # (depth, alias, table or None)
    names: tuple[str, ...] = ()  # column aliases the query defined
    table: str | None = None  # the table named last in a FROM list (an alias after it refers to it)
    words: int = 0  # identifiers and keywords completed
    named: tuple[str, ...] = ()  # every table the statement names after FROM / JOIN (never dropped)
    defined: tuple[tuple[str, str | None], ...] = ()  # every (alias, table or None) the statement defines
    bare: tuple[str, ...] = ()  # bare column names used, to be found in `named` where the statement ends
    refs: tuple[tuple[str, str], ...] = ()  # every X.y used, to be resolved where the statement ends
    newline: bool = False  # the last character was a newline outside a string
    ended: bool = False
    last: str = ""  # what ended last: "num", "str" (a string or quoted name), "name", "alias" (a name it defined),
    # ")", "distinct" (or ALL),
    # "select" (SELECT, a set operator, IS or NOT: DISTINCT / ALL may follow), "(" (so may they), ""
    parts: tuple[tuple[str, ...], ...] = ((),)  # per depth, the tables the query part reads (SUBQUERY: a subquery)
    pending: tuple[tuple[int, str, str], ...] = ()  # (depth, qualifier or "" for a bare name, column) unresolved
    spaces: int = 0  # whitespace characters in a row (outside strings) just written


class SchemaConstraint:
    """The constraint for one database and one tokenizer: `start()` -> State, `advance(state, token)` -> State or
    None (the token cannot lead to valid SQL). beam_search calls it for each candidate it walks past."""

    def __init__(self, tables: dict[str, list[str]], token_texts: list[str], eos_id: int | None,
                 stop_ids: frozenset[int], banned_ids: frozenset[int] = frozenset()):
        self.columns = {t.lower(): sorted({c.lower() for c in cols}) for t, cols in tables.items()}
        self.tables = sorted(self.columns)
        self.all_columns = sorted({c for cols in self.columns.values() for c in cols})
        self.bare = sorted(set(self.all_columns) | set(self.tables) | KEYWORDS)
        self.token_texts, self.eos_id, self.stop_ids, self.banned = token_texts, eos_id, stop_ids, banned_ids
        self._cache: dict[tuple[State, int], State | None] = {}

    @classmethod
    def for_database(cls, db_path, tokenizer) -> "SchemaConstraint":
        from sqlcopilot_core.generate import statement_end_ids

        tables = constraint_spec(db_path)["tables"]
        banned = frozenset(tokenizer.all_special_ids) - {tokenizer.eos_token_id}
        return cls(tables, token_texts(tokenizer), tokenizer.eos_token_id, statement_end_ids(tokenizer), banned)

    def start(self) -> State:
        return State()

    def advance(self, state: State, token: int) -> State | None:
        key = (state, token)
        if key in self._cache:
            return self._cache[key]
        result = self._advance(state, token)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _advance(self, state: State, token: int) -> State | None:
        if state.ended:
            return state
        if token == self.eos_id:
            return self._end(state)
        if token in self.banned:
            return None
        text = self.token_texts[token]
        if token in self.stop_ids:
            cuts = [at for at in (text.find(";"), text.find("\n\n")) if at != -1]
            if cuts:
                state = self.feed(state, text[:min(cuts)])
                return None if state is None else self._end(state)
        return self.feed(state, text)

    def accepts(self, text: str) -> bool:
        """Whether `text` is a valid prefix (not necessarily a whole statement)."""
        return self.feed(State(), text) is not None

    def _end(self, state: State) -> State | None:
        if state.mode != 0 or state.depth != 0 or state.words == 0:
            return None
        if state.word:
            state = self._complete(state, " ")
        if state is None or state.qualifier is not None or not self._in_scope(state):
            return None
        state = self._resolve(state)
        return None if state is None else replace(state, ended=True)

    def _resolve(self, state: State) -> State | None:
        """The part at the state's depth ends: each of its pending names must be resolved by the tables it reads
        (or a result name / alias); what is not moves to the part around it, or fails at depth 0 (the outermost query)."""
        depth, tables = state.depth, state.parts[-1]
        pending = []
        for entry in state.pending:
            if entry[0] != depth:
                pending.append(entry)
                continue
            _, qualifier, column = entry
            if qualifier:
                if qualifier in tables:
                    continue
            elif column in state.names or any(a == column for a, _ in state.defined) or SUBQUERY in tables:
                continue
            else:
                having = sum(1 for t in tables if self._contains(self.columns[t], column))
                if having > 1:
                    return None  # ambiguous column name
                if having == 1:
                    continue
            if depth == 0:
                return None
            pending.append((depth - 1, qualifier, column))
        return replace(state, pending=tuple(pending))

    def _define_alias(self, state: State, alias: str) -> State | None:
        """A FROM clause names `alias` for its last table (None: a subquery): `X.y` written before it in this part
        (the select list) must be a column of that table."""
        depth, table = state.depth, state.table
        pending = []
        for entry in state.pending:
            if entry[0] == depth and entry[1] == alias:
                if table is not None and not self._contains(self.columns[table], entry[2]):
                    return None
                continue
            pending.append(entry)
        return replace(state, aliases=state.aliases + ((depth, alias, table),),
                       defined=state.defined + ((alias, table),), pending=tuple(pending))

    def _in_scope(self, state: State) -> bool:
        """The scope check where the statement ends (the module's docstring)."""
        named = set(state.named)
        defined: dict[str, list[str | None]] = {}
        for alias, table in state.defined:
            defined.setdefault(alias, []).append(table)
        names = set(state.names)
        for word in state.bare:
            if not (word in names or word in defined
                    or any(self._contains(self.columns[t], word) for t in named)):
                return False
        for qualifier, column in state.refs:
            tables = list(defined.get(qualifier, ()))
            if qualifier in named:
                tables.append(qualifier)
            if not tables:
                return False
            if None not in tables and not any(self._contains(self.columns[t], column) for t in tables):
                return False
        return True

    # --- characters ---------------------------------------------------------------------------------------------

    def feed(self, state: State, text: str) -> State | None:
        for char in text:
            if state.ended:
                return state
            if state.newline and char in "\n-":  # a blank line or a comment line: where extract_sql cuts
                return self._end(replace(state, newline=False))
            state = self._char(state, char)
            if state is None:
                return None
            newline = char == "\n" and state.mode == 0
            spaces = state.spaces + 1 if state.mode == 0 and char.isspace() else 0
            if spaces > MAX_SPACE:
                return None
            if newline != state.newline or spaces != state.spaces:
                state = replace(state, newline=newline, spaces=spaces)
        if state.mode == 0 and state.word and not self._partial_ok(state):
            return None
        return state

    def _char(self, state: State, char: str) -> State | None:
        mode = state.mode
        if mode:
            closing = {1: "'", 2: '"', 3: "`", 4: "]"}[mode]
            if char == closing:
                return replace(state, mode=0, words=state.words + 1, last="str", quoted=0)
            return replace(state, quoted=state.quoted + 1) if state.quoted < MAX_STRING else None
        if char.isalnum() or char == "_" or (char == "." and state.word[:1].isdigit()):
            if len(state.word) >= MAX_NUMBER and state.word[:1].isdigit():
                return None
            return replace(state, word=state.word + char.lower())
        if state.word:
            state = self._complete(state, char)
            if state is None:
                return None
        if char.isspace():
            return state
        if char not in SQL_PUNCTUATION:
            return None
        if state.context == "table" and char != "(":
            return None
        if state.clauses[-1] in LIMIT_CLAUSES and not (
                char in ");" or (char == "," and state.last == "num" and state.clauses[-1] == "limit")):
            return None  # LIMIT n [OFFSET m | , m]
        if char == ".":
            return state  # _complete made the word a qualifier
        if char in "'\"`[":
            if not self._may_follow(state):
                return None
            return replace(state, mode="'\"`[".index(char) + 1, context="")
        if char == "(":
            if state.last in ("num", "str", ")") or state.depth >= MAX_DEPTH:
                return None
            parts = state.parts
            if state.clauses[-1] == "from":
                if len(parts[-1]) >= MAX_TABLES:
                    return None
                parts = parts[:-1] + (parts[-1] + (SUBQUERY,),)
            return replace(state, depth=state.depth + 1, clauses=state.clauses + ("",), ranks=state.ranks + (0,),
                           context="", last="(", parts=parts + ((),))
        if char == ")":
            if state.depth == 0:
                return None
            state = self._resolve(state)
            if state is None:
                return None
            aliases = tuple(a for a in state.aliases if a[0] < state.depth)
            # an alias after `)` names the subquery, not the table it read last
            return replace(state, depth=state.depth - 1, clauses=state.clauses[:-1], ranks=state.ranks[:-1],
                           aliases=aliases, context="", table=None, last=")", parts=state.parts[:-1])
        if char == ",":
            clause = state.clauses[-1]
            if clause == "limit":  # LIMIT a, b is LIMIT b OFFSET a: nothing more may follow b
                return replace(state, clauses=state.clauses[:-1] + ("offset",), last="")
            return replace(state, context="table" if clause == "from" else "", last="")
        if char == ";":
            return self._end(state) if state.depth == 0 else None
        if char == "*" and state.qualifier is not None:
            return replace(state, qualifier=None, last="name")
        return replace(state, context="" if state.context != "table" else "table", last="")

    @staticmethod
    def _may_follow(state: State) -> bool:
        """Whether a name or string may start here: not right after an operand, unless it is an alias."""
        return state.last not in OPERAND_ENDS or state.clauses[-1] in ALIAS_CLAUSES

    def _partial_ok(self, state: State) -> bool:
        """A word cut by the end of a token: can it still become something valid here?"""
        word = state.word
        if word[:1].isdigit():
            return state.last not in OPERAND_ENDS
        if state.clauses[-1] in LIMIT_CLAUSES:
            return state.clauses[-1] == "limit" and state.last == "num" and "offset".startswith(word)
        if state.qualifier is not None:
            return _has_prefix(self._qualified_columns(state), word)
        if state.context == "table":
            return _has_prefix(self.tables, word)
        if state.context in ("alias", "after_table"):
            return True
        if not self._may_follow(state):
            return _has_prefix(SORTED_KEYWORDS, word)
        return (_has_prefix(self.bare, word) or self._alias_prefix(state, word)
                or bool(SHORT_ALIAS.fullmatch(word)))

    def _alias_prefix(self, state: State, word: str) -> bool:
        return any(a[1].startswith(word) for a in state.aliases) or any(n.startswith(word) for n in state.names)

    def _qualified_columns(self, state: State) -> list[str]:
        qualifier = state.qualifier
        for depth, alias, table in reversed(state.aliases):
            if alias == qualifier and depth == state.depth:
                return self.columns.get(table, self.all_columns) if table else self.all_columns
        if qualifier in self.columns:
            return self.columns[qualifier]
        return self.all_columns

    def _complete(self, state: State, next_char: str) -> State | None:
        """The word before `next_char` is whole: check it and update the context."""
        word, state = state.word, replace(state, word="")
        if word[:1].isdigit():
            if state.last in OPERAND_ENDS:
                return None
            return replace(state, words=state.words + 1, context="", last="num")
        words = state.words + 1
        if next_char == ".":
            if state.qualifier is not None:
                return None  # a.b.c
            if state.context == "table":
                return None  # `FROM t.c`: a database name
            known = word in self.columns or any(a[1] == word for a in state.aliases)
            if not (known or SHORT_ALIAS.fullmatch(word)) or not self._may_follow(state):
                return None
            return replace(state, qualifier=word, words=words, context="", last="name")
        if state.qualifier is not None:
            if not self._contains(self._qualified_columns(state), word):
                return None
            pending = state.pending
            if not any(a[1] == state.qualifier for a in state.aliases):  # resolved where the part defines or reads it
                pending += ((state.depth, state.qualifier, word),)
            return replace(state, qualifier=None, words=words, context="", pending=pending,
                           refs=state.refs + ((state.qualifier, word),), last="name")
        context = state.context
        if context == "table":
            if word not in self.columns:
                return None
            if len(state.parts[-1]) >= MAX_TABLES:
                return None
            named = state.named if word in state.named else state.named + (word,)
            parts = state.parts[:-1] + (state.parts[-1] + (word,),)
            return replace(state, table=word, words=words, context="after_table", named=named, last="name",
                           parts=parts)
        if context == "alias":
            if state.clauses[-1] == "from":
                state = self._define_alias(state, word)
                return None if state is None else replace(state, words=words, context="", last="alias")
            return replace(state, names=state.names + (word,), words=words, context="", last="alias")
        if context == "after_table" and word not in KEYWORDS:
            state = self._define_alias(state, word)
            return None if state is None else replace(state, words=words, context="", last="alias")
        if state.clauses[-1] in LIMIT_CLAUSES and not (
                word == "offset" and state.clauses[-1] == "limit" and state.last == "num"):
            return None  # LIMIT n [OFFSET m]
        column = word in FUNCTIONS and self._contains(self.all_columns, word)  # `date`, `total` as a column
        if word in KEYWORDS and not (column and next_char != "("):
            if word == "as" and state.last == "alias":
                return None  # `JOIN model_list AS T2_make AS T3`: one alias a name
            if word in AGGREGATES and state.clauses[-1] in NO_AGGREGATE_CLAUSES and not column:
                return None  # `WHERE ... AND count(*) >= 3`: misuse of aggregate
            distinct = word in ("distinct", "all")
            if distinct and state.last not in ("select", "("):
                return None  # DISTINCT / ALL open a select list or an aggregate's arguments, follow UNION, IS [NOT]
            last = "distinct" if distinct else "select" if word in DISTINCT_BEFORE else ""
            return self._keyword(replace(state, words=words, last=last), word)
        if not self._may_follow(state):
            return None
        if any(a[1] == word for a in state.aliases) or word in state.names:
            return replace(state, words=words, context="", last="name")
        if self._contains(self.all_columns, word):
            bare = state.bare if word in state.bare else state.bare + (word,)
            pending = state.pending + ((state.depth, "", word),)
            return replace(state, words=words, context="", bare=bare, pending=pending, last="name")
        return None

    def _keyword(self, state: State, word: str) -> State | None:
        clauses = state.clauses
        if word in CLAUSE_RANKS:
            rank = next_rank(state.ranks[-1], word)
            if rank is None:
                return None
            state = replace(state, ranks=state.ranks[:-1] + (rank,))
            if word in FROM_ENDS and rank != FREE_RANK and state.parts[-1]:
                state = self._resolve(state)  # the part's FROM clause is over: its tables are all known
                if state is None:
                    return None
        if word == "from":
            return replace(state, clauses=clauses[:-1] + ("from",), context="table", table=None)
        if word == "join":  # back in the FROM clause (after an ON): `AS x` names the joined table
            return replace(state, clauses=clauses[:-1] + ("from",), context="table")
        if word == "as":
            return replace(state, context="alias")
        if word in SET_OPERATORS:
            state = self._resolve(state)
            if state is None:
                return None
            aliases = tuple(a for a in state.aliases if a[0] < state.depth)
            return replace(state, clauses=clauses[:-1] + (word,), aliases=aliases, context="", table=None,
                           parts=state.parts[:-1] + ((),))
        if word in CLAUSE_WORDS:
            return replace(state, clauses=clauses[:-1] + (word,), context="")
        return replace(state, context="")

    @staticmethod
    def _contains(names: list[str], word: str) -> bool:
        at = bisect.bisect_left(names, word)
        return at < len(names) and names[at] == word


def constraint_spec(db_path) -> dict:
    """What the C++ runner builds its SchemaConstraint from (cpp/include/sqlcopilot/constraint.h), per request:
    {"tables": {table: [column, ...]}}, the database's names as SchemaConstraint.for_database reads them."""
    from sqlcopilot_core.spider import read_schema

    schema = read_schema(db_path)
    return {"tables": {t.name: [c.name for c in t.columns] for t in schema.tables}}


def token_texts(tokenizer) -> list[str]:
    """Each token id's text (as decoding it alone gives), cached on the tokenizer."""
    cached = getattr(tokenizer, "_sqlcopilot_token_texts", None)
    if cached is None:
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        cached = [tokenizer.convert_tokens_to_string([p]) if p is not None else "" for p in pieces]
        tokenizer._sqlcopilot_token_texts = cached
    return cached


def check_gold(spider_dir, split: str, tokenizer) -> list[dict]:
    """Every gold query of a split fed token by token (as training writes it: tokens + end-of-text): the ones the
    constraint rejects, with the token where it did."""
    from sqlcopilot_core.packing import target_ids
    from sqlcopilot_core.spider import load_split

    rejected, constraints = [], {}
    for example in load_split(spider_dir, split):
        if example.db_path not in constraints:
            constraints[example.db_path] = SchemaConstraint.for_database(example.db_path, tokenizer)
        constraint = constraints[example.db_path]
        state = constraint.start()
        ids = target_ids(tokenizer, example.query)
        for at, token in enumerate(ids):
            state = constraint.advance(state, token)
            if state is None:
                rejected.append({"index": example.index, "db_id": example.db_id, "query": example.query,
                                 "rejected_at": tokenizer.decode(ids[:at + 1])})
                break
    return rejected


if __name__ == "__main__":
    import json

    from transformers import AutoTokenizer

    if len(sys.argv) < 3:
        sys.exit("usage: python -m sqlcopilot_core.sqlconstraint SPIDER_DIR SPLIT [TOKENIZER_DIR]")
    tok = AutoTokenizer.from_pretrained(sys.argv[3] if len(sys.argv) > 3 else "work/smollm2_base")
    bad = check_gold(Path(sys.argv[1]), sys.argv[2], tok)
    print(json.dumps({"rejected": len(bad), "examples": bad[:20]}, indent=1))
