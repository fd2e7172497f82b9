"""What one sample database is made of, plus the name pools and random helpers its row generators share.

    python -c "import random, sqlcopilot_core.sample.common as c; print(c.unique_person_names(random.Random(0), 3))"
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable

Rows = dict[str, list[tuple]]


@dataclass(frozen=True)
class SampleDatabase:
    """One domain of the sample dataset: its schema, a seeded row generator and its gold question/SQL pairs."""

    db_id: str
    """Name of the database, its folder and its .sqlite file."""
    split: str
    """"train" or "dev": which Spider file its examples go to (a database belongs to one split only)."""
    seed: int
    """Seed of the random.Random that make_rows receives, so the rows are the same on every build."""
    schema_sql: str
    """CREATE TABLE statements, parents first, declaring primary and foreign keys."""
    make_rows: Callable[[random.Random], Rows]
    """Returns the rows of every table, keyed by table name, in insertion order (parents first)."""
    examples: tuple[tuple[str, str], ...]
    """(question, gold SQL) pairs."""

    def __post_init__(self) -> None:
        if self.split not in ("train", "dev"):
            raise ValueError(f"sample database {self.db_id}: split must be 'train' or 'dev', got {self.split!r}")
        questions = [question for question, _ in self.examples]
        repeated = sorted({q for q in questions if questions.count(q) > 1})
        if repeated:
            raise ValueError(f"sample database {self.db_id}: repeated questions {repeated}")


FIRST_NAMES = [
    "Alice", "Ben", "Carla", "Daniel", "Elif", "Farid", "Grace", "Hugo", "Ingrid", "Jonas",
    "Keiko", "Liam", "Maria", "Nikolai", "Olivia", "Pablo", "Quinn", "Rosa", "Samir", "Tara",
    "Umar", "Vera", "William", "Ximena", "Yara", "Zoltan", "Aisha", "Bruno", "Chloe", "Dmitri",
    "Emma", "Felix", "Gabriela", "Hana", "Isaac", "Julia", "Kofi", "Lena", "Mateo", "Nora",
]
LAST_NAMES = [
    "Adams", "Bianchi", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ivanova", "Jensen",
    "Kowalski", "Lopez", "Moreau", "Nakamura", "O'Brien", "Petrov", "Quintero", "Rossi", "Schmidt", "Tanaka",
    "Usman", "Varga", "Walsh", "Xu", "Yilmaz", "Zimmermann", "Andersson", "Baker", "Chen", "Novak",
    "Okafor", "Patel", "Silva", "Murphy", "Keller", "Lindqvist", "Martin", "Horvat", "Sato", "Weber",
]
CITIES = ["London", "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Dublin", "Vienna", "Amsterdam", "Prague"]


def unique_person_names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct "First Last" names, so questions that name a person pick out exactly one."""
    return rng.sample([f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES], count)


def random_date(rng: random.Random, first: str, last: str) -> str:
    """An ISO date (YYYY-MM-DD) between `first` and `last` inclusive: the format Spider's date columns use."""
    start = date.fromisoformat(first)
    return (start + timedelta(days=rng.randint(0, (date.fromisoformat(last) - start).days))).isoformat()


def days_after(iso_date: str, days: int) -> str:
    """The ISO date `days` after `iso_date`."""
    return (date.fromisoformat(iso_date) + timedelta(days=days)).isoformat()


def sometimes_null(rng: random.Random, value: Any, null_share: float) -> Any:
    """`value`, or None with probability `null_share`: real tables have gaps that queries must cope with."""
    return None if rng.random() < null_share else value


def weighted_choice(rng: random.Random, weights: dict[Any, float]) -> Any:
    """One key of `weights`, drawn in proportion to its weight (dicts keep order, so this is deterministic)."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]
