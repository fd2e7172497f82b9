"""Dev database music_festival: yearly festival editions, artists, their performances and ticket sales.

    python -c "from sqlcopilot_core.sample.festival import DATABASE; print(len(DATABASE.examples))"
"""

from __future__ import annotations

import random

from sqlcopilot_core.sample.common import Rows, SampleDatabase, sometimes_null, unique_person_names

SCHEMA_SQL = """
CREATE TABLE festivals (
    festival_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    country TEXT NOT NULL,
    year INTEGER NOT NULL,
    capacity INTEGER
);
CREATE TABLE artists (
    artist_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    genre TEXT NOT NULL,
    country TEXT,
    formed_year INTEGER
);
CREATE TABLE performances (
    performance_id INTEGER PRIMARY KEY,
    festival_id INTEGER NOT NULL,
    artist_id INTEGER NOT NULL,
    stage TEXT NOT NULL,
    day INTEGER NOT NULL,
    duration_minutes INTEGER NOT NULL,
    fee REAL,
    is_headliner BOOLEAN NOT NULL,
    FOREIGN KEY (festival_id) REFERENCES festivals (festival_id),
    FOREIGN KEY (artist_id) REFERENCES artists (artist_id)
);
CREATE TABLE ticket_sales (
    sale_id INTEGER PRIMARY KEY,
    festival_id INTEGER NOT NULL,
    ticket_type TEXT NOT NULL,
    price REAL NOT NULL,
    quantity_sold INTEGER NOT NULL,
    FOREIGN KEY (festival_id) REFERENCES festivals (festival_id)
);
"""

FESTIVALS = [  # (name, city, country, usual capacity); each is held in 2022, 2023 and 2024
    ("Northern Lights Fest", "Oslo", "Norway", 12000), ("Sunset Sound", "Barcelona", "Spain", 30000),
    ("Riverside Jazz Days", "Vienna", "Austria", 8000), ("Green Valley Festival", "Bristol", "United Kingdom", 22000),
]
YEARS = [2022, 2023, 2024]
GENRES = ["Rock", "Pop", "Jazz", "Electronic", "Folk", "Hip Hop", "Metal"]
ARTIST_COUNTRIES = ["Sweden", "Norway", "Spain", "United Kingdom", "United States", "Austria", "Brazil", "Japan",
                    "Canada", "Australia", "Nigeria"]
BAND_ADJECTIVES = ["Velvet", "Electric", "Midnight", "Paper", "Neon", "Wild", "Silver", "Hollow", "Lunar", "Iron"]
BAND_NOUNS = ["Foxes", "Echoes", "Tigers", "Satellites", "Ravens", "Lanterns", "Pilots", "Waves", "Giants", "Owls"]
STAGES = ["Main Stage", "Forest Stage", "Tent"]
TICKETS = {  # ticket type: (price range, share of capacity sold)
    "day pass": ((60, 90), 0.30), "weekend pass": ((150, 220), 0.50), "VIP": ((350, 600), 0.05),
}


def make_artists(rng: random.Random) -> list[tuple]:
    bands = rng.sample([f"The {adj} {noun}" for adj in BAND_ADJECTIVES for noun in BAND_NOUNS], 35)
    names = bands + unique_person_names(rng, 25)
    rng.shuffle(names)
    return [(artist_id, name, rng.choice(GENRES), sometimes_null(rng, rng.choice(ARTIST_COUNTRIES), 0.05),
             sometimes_null(rng, rng.randint(1975, 2021), 0.1))
            for artist_id, name in enumerate(names, start=1)]


def make_lineups(rng: random.Random, festivals: list[tuple], artists: list[tuple]) -> list[tuple]:
    performers = artists[:54]  # the last 6 artists are never booked
    performances = []
    for festival in festivals:
        for slot, artist in enumerate(rng.sample(performers, rng.randint(15, 19))):
            headliner = slot < 3  # three headliners per edition, all on the main stage
            stage = "Main Stage" if headliner else rng.choice(STAGES)
            duration = rng.choice([90, 105, 120]) if headliner else rng.choice([30, 45, 60, 75])
            fee = rng.randrange(40_000, 150_000, 1_000) if headliner else rng.randrange(2_000, 30_000, 500)
            performances.append((len(performances) + 1, festival[0], artist[0], stage, rng.randint(1, 3), duration,
                                 sometimes_null(rng, float(fee), 0.04), int(headliner)))
    return performances


def make_rows(rng: random.Random) -> Rows:
    festivals = []
    for name, city, country, capacity in FESTIVALS:
        for year in YEARS:
            edition_capacity = round(capacity * rng.uniform(0.9, 1.1), -2)
            festivals.append((len(festivals) + 1, name, city, country, year, edition_capacity))
    artists = make_artists(rng)
    ticket_sales = []
    for festival in festivals:
        for ticket_type, ((low, high), share) in TICKETS.items():
            sold = int(festival[5] * share * rng.uniform(0.8, 1.05))
            ticket_sales.append((len(ticket_sales) + 1, festival[0], ticket_type, float(rng.randint(low, high)), sold))
    return {"festivals": festivals, "artists": artists, "performances": make_lineups(rng, festivals, artists),
            "ticket_sales": ticket_sales}


EXAMPLES = (
    ("How many artists are there?", "SELECT count(*) FROM artists"),
    ("List the names and cities of the festivals held in 2023.",
     "SELECT name, city FROM festivals WHERE year = 2023"),
    ("Which genres do the artists play?", "SELECT DISTINCT genre FROM artists"),
    ("How many artists play each genre?", "SELECT genre, count(*) FROM artists GROUP BY genre"),
    ("Which festival edition had the largest capacity? Give its name and year.",
     "SELECT name, year FROM festivals ORDER BY capacity DESC LIMIT 1"),
    ("Which artists come from Sweden?", "SELECT name FROM artists WHERE country = 'Sweden'"),
    ("What is the average fee paid for a performance?", "SELECT avg(fee) FROM performances"),
    ("What are the names of the artists who have headlined a festival?",
     "SELECT DISTINCT T1.name FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "WHERE T2.is_headliner = 1"),
    ("Which artists have never performed at a festival?",
     "SELECT name FROM artists WHERE artist_id NOT IN (SELECT artist_id FROM performances)"),
    ("How many performances did each festival edition have? Show the name, the year and the count.",
     "SELECT T1.name, T1.year, count(*) FROM festivals AS T1 JOIN performances AS T2 "
     "ON T1.festival_id = T2.festival_id GROUP BY T1.festival_id"),
    ("Which artist has performed the most times?",
     "SELECT T1.name FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "GROUP BY T1.artist_id ORDER BY count(*) DESC LIMIT 1"),
    ("How much did each festival pay its artists in 2024?",
     "SELECT T1.name, sum(T2.fee) FROM festivals AS T1 JOIN performances AS T2 ON T1.festival_id = T2.festival_id "
     "WHERE T1.year = 2024 GROUP BY T1.festival_id"),
    ("Which genres were performed more than 25 times?",
     "SELECT T1.genre FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "GROUP BY T1.genre HAVING count(*) > 25"),
    ("How many tickets of each type were sold across all festivals?",
     "SELECT ticket_type, sum(quantity_sold) FROM ticket_sales GROUP BY ticket_type"),
    ("What was the ticket revenue of each festival edition?",
     "SELECT T1.name, T1.year, sum(T2.price * T2.quantity_sold) FROM festivals AS T1 JOIN ticket_sales AS T2 "
     "ON T1.festival_id = T2.festival_id GROUP BY T1.festival_id"),
    ("Which artists were ever paid more than the average performance fee?",
     "SELECT DISTINCT T1.name FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "WHERE T2.fee > (SELECT avg(fee) FROM performances)"),
    ("Which artists have played at both Northern Lights Fest and Sunset Sound?",
     "SELECT T1.name FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "JOIN festivals AS T3 ON T2.festival_id = T3.festival_id WHERE T3.name = 'Northern Lights Fest' "
     "INTERSECT SELECT T1.name FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "JOIN festivals AS T3 ON T2.festival_id = T3.festival_id WHERE T3.name = 'Sunset Sound'"),
    ("Which cities host a festival edition with a capacity above 25000 or a festival in Austria?",
     "SELECT city FROM festivals WHERE capacity > 25000 UNION SELECT city FROM festivals WHERE country = 'Austria'"),
    ("Which countries have artists but host no festival?",
     "SELECT country FROM artists WHERE country IS NOT NULL EXCEPT SELECT country FROM festivals"),
    ("List the performances longer than 90 minutes with the artist's name and the stage.",
     "SELECT T1.name, T2.stage FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "WHERE T2.duration_minutes > 90"),
    ("Which artists were formed before 2000? List them from the oldest.",
     "SELECT name FROM artists WHERE formed_year < 2000 ORDER BY formed_year"),
    ("How many performances took place on each stage on the third day?",
     "SELECT stage, count(*) FROM performances WHERE day = 3 GROUP BY stage"),
    ("Which festival editions sold more than 10000 tickets in total?",
     "SELECT T1.name, T1.year FROM festivals AS T1 JOIN ticket_sales AS T2 ON T1.festival_id = T2.festival_id "
     "GROUP BY T1.festival_id HAVING sum(T2.quantity_sold) > 10000"),
    ("Which artist received the highest fee for a single performance?",
     "SELECT T1.name FROM artists AS T1 JOIN performances AS T2 ON T1.artist_id = T2.artist_id "
     "ORDER BY T2.fee DESC LIMIT 1"),
    ("How many artists have no recorded formation year?", "SELECT count(*) FROM artists WHERE formed_year IS NULL"),
)

DATABASE = SampleDatabase("music_festival", "dev", 606, SCHEMA_SQL, make_rows, EXAMPLES)
