"""Spider's hardness levels (easy, medium, hard, extra), computed exactly as Spider's evaluation.py does.

    python -m sqlcopilot_core.hardness ../shared/spider

From Spider's parsed `sql` dict when an example carries one (dev.json does), else from the SQL text through a light
parser of our own that counts the same components. Run as above, the module reports how often the text-based
levels agree with the parsed ones on a split that has both.

Spider's rules count three things over the *outermost* query only (nested queries are counted, not looked into):
  component1: WHERE, GROUP BY, ORDER BY, LIMIT (1 each), each join (tables - 1), each OR and each LIKE condition;
  component2: subqueries used as condition values, plus INTERSECT/UNION/EXCEPT;
  others:     more than one "aggregate", more than one select column, more than one WHERE condition, more than one
              GROUP BY column (1 each).
Spider's "aggregate" count has quirks that we keep on purpose so that levels match published numbers: in WHERE and
HAVING it counts negated conditions (NOT IN, NOT LIKE, ...) rather than aggregate functions, and in HAVING it also
counts every AND/OR; in SELECT only an item that starts with an aggregate function counts.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")
AGGREGATES = {"max", "min", "count", "sum", "avg"}
SET_OPERATORS = {"intersect", "union", "except"}
CLAUSE_STARTS = {"select", "from", "where", "group", "having", "order", "limit"}
LIKE_OP_ID = 9  # index of 'like' in Spider's WHERE_OPS
TOKEN_PATTERN = re.compile(r"""
      '(?:[^']|'')*'?             # string literal ('' escapes a quote)
    | "(?:[^"]|"")*"?             # double-quoted identifier or string
    | `[^`]*`? | \[[^\]]*\]?      # other identifier quotings
    | \d+(?:\.\d*)?(?:e[+-]?\d+)? | \.\d+
    | [A-Za-z_][\w$]*(?:\s*\.\s*(?:[A-Za-z_][\w$]*|\*|"[^"]*"|`[^`]*`|\[[^\]]*\]))*
    | !=|<>|<=|>=|==|\|\|
    | \S
""", re.VERBOSE | re.IGNORECASE)

Item = Union[str, list]  # a token, or a parenthesized group of items


@dataclass(frozen=True)
class Components:
    """The three counts Spider's eval_hardness looks at."""

    component1: int
    component2: int
    others: int


def level_from_counts(counts: Components) -> str:
    """Spider's Evaluator.eval_hardness decision table."""
    c1, c2, others = counts.component1, counts.component2, counts.others
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if ((others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0)
            or (c1 <= 1 and others == 0 and c2 <= 1)):
        return "hard"
    return "extra"


# ---- from Spider's parsed dict (a port of count_component1, count_component2 and count_others) ----

def components_from_parsed(sql: dict[str, Any]) -> Components:
    """Spider's three counts from its parsed `sql` dict (as stored in dev.json)."""
    from_conds = sql["from"]["conds"]
    conds = from_conds[::2] + sql["where"][::2] + sql["having"][::2]
    connectors = from_conds[1::2] + sql["where"][1::2] + sql["having"][1::2]
    component1 = (int(len(sql["where"]) > 0) + int(len(sql["groupBy"]) > 0) + int(len(sql["orderBy"]) > 0)
                  + int(sql["limit"] is not None) + max(len(sql["from"]["table_units"]) - 1, 0)
                  + connectors.count("or") + sum(1 for cond in conds if cond[1] == LIKE_OP_ID))
    nested = [value for cond in conds for value in (cond[3], cond[4]) if isinstance(value, dict)]
    component2 = len(nested) + sum(1 for op in SET_OPERATORS if sql[op] is not None)
    return Components(component1, component2, others_from_parsed(sql))


def others_from_parsed(sql: dict[str, Any]) -> int:
    """count_others: Spider's has_agg(unit) is `unit[0] != 0`, applied to whatever unit each list holds."""
    def count_agg(units: Sequence) -> int:
        # For condition units unit[0] is the NOT flag, and for 'and'/'or' strings it is a letter: both count.
        return sum(1 for unit in units if unit[0] != 0)

    agg = count_agg(sql["select"][1]) + count_agg(sql["where"][::2]) + count_agg(sql["groupBy"])
    if sql["orderBy"]:
        val_units = sql["orderBy"][1]
        agg += count_agg([u[1] for u in val_units if u[1]] + [u[2] for u in val_units if u[2]])
    agg += count_agg(sql["having"])
    return (int(agg > 1) + int(len(sql["select"][1]) > 1) + int(len(sql["where"]) > 1)
            + int(len(sql["groupBy"]) > 1))


# ---- from SQL text ----

def tokenize_sql(sql: str) -> list[str]:
    """SQL tokens; words are lower-cased, quoted strings and identifiers kept as written."""
    tokens = [match.group(0) for match in TOKEN_PATTERN.finditer(sql)]
    return [tok if tok[0] in "'\"`[" else tok.lower() for tok in tokens]


def nest(tokens: list[str]) -> list[Item]:
    """Tokens as a tree: each parenthesized group becomes a list (unbalanced parentheses are tolerated)."""
    root: list[Item] = []
    stack = [root]
    for tok in tokens:
        if tok == "(":
            stack[-1].append([])
            stack.append(stack[-1][-1])
        elif tok == ")":
            if len(stack) > 1:
                stack.pop()
        else:
            stack[-1].append(tok)
    return root


def is_word(item: Item, words: set[str]) -> bool:
    return isinstance(item, str) and item in words


def is_subquery(item: Item) -> bool:
    return isinstance(item, list) and bool(item) and item[0] in ("select", "with")


def unwrap(items: list[Item]) -> list[Item]:
    """Items of a query written entirely inside parentheses, without them."""
    while len(items) == 1 and isinstance(items[0], list):
        items = items[0]
    return items


def outermost_query(sql: str) -> tuple[list[Item], bool]:
    """The outermost SELECT of `sql` as items, cut before a set operation, and whether there was one."""
    items = unwrap(nest(tokenize_sql(sql)))
    for position, item in enumerate(items):
        if is_word(item, SET_OPERATORS):
            return items[:position], True
    return items, False


def has_outer_order_by(sql: str) -> bool:
    """Whether the query's final result is ordered: ORDER BY outside any parentheses (also after a UNION)."""
    items = unwrap(nest(tokenize_sql(sql)))
    return any(a == "order" and b == "by" for a, b in zip(items, items[1:]))


def split_clauses(items: list[Item]) -> dict[str, list[Item]]:
    """The items of each top-level clause (select, from, where, group, having, order, limit), keywords dropped."""
    clauses: dict[str, list[Item]] = {}
    current: list[Item] | None = None
    for position, item in enumerate(items):
        if is_word(item, CLAUSE_STARTS) and item not in clauses:
            current = clauses.setdefault(item, [])
        elif current is not None and not (item == "by" and items[position - 1] in ("group", "order")):
            current.append(item)
    return clauses


def split_on(items: list[Item], separators: set[str]) -> list[list[Item]]:
    """Items split at top-level separators."""
    parts: list[list[Item]] = [[]]
    for item in items:
        if is_word(item, separators):
            parts.append([])
        else:
            parts[-1].append(item)
    return [part for part in parts if part]


def split_conditions(items: list[Item]) -> tuple[list[list[Item]], list[str]]:
    """Conditions and the and/or connectors between them; the AND of BETWEEN x AND y is not a connector."""
    conditions: list[list[Item]] = [[]]
    connectors: list[str] = []
    for item in items:
        in_between = "between" in conditions[-1] and conditions[-1].count("and") == 0
        if item in ("and", "or") and not (item == "and" and in_between):
            connectors.append(item)
            conditions.append([])
        else:
            conditions[-1].append(item)
    return [c for c in conditions if c], connectors


def join_conditions(from_items: list[Item]) -> list[Item]:
    """The items of every ON clause of a FROM clause, joined by AND as Spider's parser does."""
    joined: list[Item] = []
    current: list[Item] | None = None
    for item in from_items + ["join"]:
        if item in ("join", ",") and current is not None:
            joined += (["and"] if joined else []) + [i for i in current if i not in ("inner", "left", "right",
                                                                                     "outer", "cross", "natural")]
            current = None
        elif item == "on":
            current = []
        elif current is not None:
            current.append(item)
    return joined


def count_aggregate_calls(items: list[Item]) -> int:
    """Aggregate function calls at the top level of `items` (an aggregate name followed by a group)."""
    return sum(1 for item, following in zip(items, items[1:] + [None])
               if is_word(item, AGGREGATES) and isinstance(following, list))


def components_from_text(sql: str) -> Components:
    """Spider's three counts from SQL text, by counting the same things its parser would produce."""
    items, has_set_operation = outermost_query(sql)
    clauses = split_clauses(items)
    from_items = clauses.get("from", [])
    table_count = (1 + from_items.count("join") + from_items.count(",")) if from_items else 0
    where_conds, where_connectors = split_conditions(clauses.get("where", []))
    having_conds, having_connectors = split_conditions(clauses.get("having", []))
    on_conds, on_connectors = split_conditions(join_conditions(from_items))
    conds = on_conds + where_conds + having_conds
    group_columns = split_on(clauses.get("group", []), {","})
    component1 = (int(bool(where_conds)) + int(bool(group_columns)) + int(bool(clauses.get("order")))
                  + int("limit" in clauses) + max(table_count - 1, 0)
                  + (on_connectors + where_connectors + having_connectors).count("or")
                  + sum(1 for cond in conds if "like" in cond))
    nested = sum(1 for cond in conds for item in cond if is_subquery(item))
    component2 = nested + int(has_set_operation)
    return Components(component1, component2, others_from_text(clauses, where_conds, having_conds,
                                                               having_connectors, group_columns))


def others_from_text(clauses: dict[str, list[Item]], where_conds: list[list[Item]], having_conds: list[list[Item]],
                     having_connectors: list[str], group_columns: list[list[Item]]) -> int:
    """count_others with Spider's quirks (see the module docstring)."""
    select_items = clauses.get("select", [])
    if select_items[:1] == ["distinct"]:
        select_items = select_items[1:]
    select_columns = split_on(select_items, {","})
    agg = (sum(1 for column in select_columns if is_word(column[0], AGGREGATES))
           + sum(1 for cond in where_conds + having_conds if "not" in cond) + len(having_connectors)
           + count_aggregate_calls(clauses.get("group", [])) + count_aggregate_calls(clauses.get("order", [])))
    return int(agg > 1) + int(len(select_columns) > 1) + int(len(where_conds) > 1) + int(len(group_columns) > 1)


def hardness_from_parsed(sql: dict[str, Any]) -> str:
    return level_from_counts(components_from_parsed(sql))


def hardness_from_text(sql: str) -> str:
    return level_from_counts(components_from_text(sql))


def example_hardness(example) -> str:
    """Hardness of a spider.Example: from its parsed `sql` when present, else from its query text."""
    if example.sql is not None:
        try:
            return hardness_from_parsed(example.sql)
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"example {example.index} ({example.db_id}): malformed parsed 'sql' field: "
                             f"{type(exc).__name__} {exc}") from None
    return hardness_from_text(example.query)


def text_agreement(examples) -> tuple[float, list]:
    """Share of examples (those with a parsed `sql`) whose text-based level equals the parsed one, and the others."""
    parsed = [ex for ex in examples if ex.sql is not None]
    if not parsed:
        raise ValueError("no example carries Spider's parsed 'sql' field; nothing to compare against")
    disagreements = [(ex, hardness_from_parsed(ex.sql), hardness_from_text(ex.query)) for ex in parsed
                     if hardness_from_parsed(ex.sql) != hardness_from_text(ex.query)]
    return 1 - len(disagreements) / len(parsed), disagreements


def main(argv: list[str]) -> int:
    from collections import Counter

    from sqlcopilot_core.spider import load_split

    if len(argv) not in (1, 2):
        print("usage: python -m sqlcopilot_core.hardness SPIDER_DIR [SPLIT]", file=sys.stderr)
        return 2
    examples = load_split(argv[0], argv[1] if len(argv) == 2 else "dev")
    print("levels:", dict(Counter(example_hardness(ex) for ex in examples)))
    agreement, disagreements = text_agreement(examples)
    print(f"text-based level agrees with the parsed one on {agreement:.1%} of examples")
    for ex, from_parsed, from_text in disagreements[:20]:
        print(f"  #{ex.index} parsed={from_parsed} text={from_text}: {ex.query}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
