"""Dev database regional_flights: airports, airlines, their flights, passengers and bookings.

    python -c "from sqlcopilot_core.sample.flights import DATABASE; print(len(DATABASE.examples))"
"""

from __future__ import annotations

import math
import random

from sqlcopilot_core.sample.common import (
    Rows, SampleDatabase, random_date, sometimes_null, unique_person_names, weighted_choice,
)

SCHEMA_SQL = """
CREATE TABLE airports (
    airport_code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    country TEXT NOT NULL
);
CREATE TABLE airlines (
    airline_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    country TEXT,
    founded_year INTEGER
);
CREATE TABLE flights (
    flight_id INTEGER PRIMARY KEY,
    airline_id INTEGER NOT NULL,
    flight_number TEXT NOT NULL,
    origin TEXT NOT NULL,
    destination TEXT NOT NULL,
    departure_date DATE NOT NULL,
    duration_minutes INTEGER NOT NULL,
    price REAL NOT NULL,
    seats INTEGER NOT NULL,
    FOREIGN KEY (airline_id) REFERENCES airlines (airline_id),
    FOREIGN KEY (origin) REFERENCES airports (airport_code),
    FOREIGN KEY (destination) REFERENCES airports (airport_code)
);
CREATE TABLE passengers (
    passenger_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    nationality TEXT,
    frequent_flyer_level TEXT
);
CREATE TABLE bookings (
    booking_id INTEGER PRIMARY KEY,
    flight_id INTEGER NOT NULL,
    passenger_id INTEGER NOT NULL,
    seat_class TEXT NOT NULL,
    amount_paid REAL NOT NULL,
    FOREIGN KEY (flight_id) REFERENCES flights (flight_id),
    FOREIGN KEY (passenger_id) REFERENCES passengers (passenger_id)
);
"""

AIRPORTS = [  # (code, name, city, country, latitude, longitude); Oslo is listed but no flight uses it
    ("LHR", "Heathrow Airport", "London", "United Kingdom", 51.47, -0.45),
    ("CDG", "Charles de Gaulle Airport", "Paris", "France", 49.01, 2.55),
    ("ORY", "Orly Airport", "Paris", "France", 48.73, 2.38),
    ("FRA", "Frankfurt Airport", "Frankfurt", "Germany", 50.03, 8.57),
    ("MUC", "Munich Airport", "Munich", "Germany", 48.35, 11.79),
    ("MAD", "Madrid Barajas Airport", "Madrid", "Spain", 40.49, -3.57),
    ("BCN", "Barcelona El Prat Airport", "Barcelona", "Spain", 41.30, 2.08),
    ("FCO", "Rome Fiumicino Airport", "Rome", "Italy", 41.80, 12.25),
    ("AMS", "Schiphol Airport", "Amsterdam", "Netherlands", 52.31, 4.76),
    ("LIS", "Lisbon Humberto Delgado Airport", "Lisbon", "Portugal", 38.77, -9.13),
    ("DUB", "Dublin Airport", "Dublin", "Ireland", 53.42, -6.27),
    ("VIE", "Vienna International Airport", "Vienna", "Austria", 48.11, 16.57),
    ("OSL", "Oslo Gardermoen Airport", "Oslo", "Norway", 60.19, 11.10),
]
AIRLINES = [  # (name, country, founded year); flight numbers start with the code
    ("Northwind Air", "United Kingdom", 1998, "NW"), ("Blue Meridian", "Spain", 2005, "BM"),
    ("Alpine Connect", "Austria", 2011, "AC"), ("Atlantic Hop", "Ireland", 1987, "AH"),
    ("Rhine Express", "Germany", 2001, "RX"), ("Sol Wings", "Portugal", 2015, "SW"),
    ("Canal Jet", "Netherlands", None, "CJ"),
]
NATIONALITIES = ["United Kingdom", "France", "Germany", "Spain", "Italy", "Netherlands", "Portugal", "Ireland",
                 "Austria", "United States", "Canada", "Japan"]


def distance_km(a: tuple, b: tuple) -> float:
    """Great-circle distance between two airports: flight times and prices follow it, as real ones roughly do."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[4], a[5], b[4], b[5]))
    haversine = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371 * math.asin(math.sqrt(haversine))


def make_flights(rng: random.Random) -> list[tuple]:
    served = AIRPORTS[:-1]
    flights = []
    for flight_id in range(1, 151):
        airline_id = rng.randint(1, len(AIRLINES))
        origin, destination = rng.sample(served, 2)
        km = distance_km(origin, destination)
        duration = int(35 + km / 780 * 60) + rng.randint(0, 15)
        price = round(0.09 * km + rng.uniform(20, 120), 2)
        flight_number = f"{AIRLINES[airline_id - 1][3]}{100 + flight_id * 7}"
        departure = random_date(rng, "2024-05-01", "2024-08-31")
        flights.append((flight_id, airline_id, flight_number, origin[0], destination[0], departure, duration, price,
                        rng.choice([120, 150, 180, 220])))
    return flights


def make_rows(rng: random.Random) -> Rows:
    airports = [airport[:4] for airport in AIRPORTS]
    airlines = [(airline_id, *airline[:3]) for airline_id, airline in enumerate(AIRLINES, start=1)]
    flights = make_flights(rng)
    passengers = [(passenger_id, name, sometimes_null(rng, rng.choice(NATIONALITIES), 0.05),
                   weighted_choice(rng, {None: 50, "Silver": 25, "Gold": 17, "Platinum": 8}))
                  for passenger_id, name in enumerate(unique_person_names(rng, 120), start=1)]
    fare_multiplier = {"Economy": 1.0, "Business": 2.6, "First": 4.5}
    bookings = []
    for booking_id in range(1, 381):
        flight = rng.choice(flights)
        seat_class = weighted_choice(rng, {"Economy": 75, "Business": 20, "First": 5})
        paid = round(flight[7] * fare_multiplier[seat_class] * rng.uniform(0.85, 1.15), 2)
        bookings.append((booking_id, flight[0], rng.choice(passengers[:110])[0], seat_class, paid))
    return {"airports": airports, "airlines": airlines, "flights": flights, "passengers": passengers,
            "bookings": bookings}


EXAMPLES = (
    ("How many airports are there?", "SELECT count(*) FROM airports"),
    ("What are the names of the airports in Germany?", "SELECT name FROM airports WHERE country = 'Germany'"),
    ("List every airline with the year it was founded.", "SELECT name, founded_year FROM airlines"),
    ("What is the average price of a flight?", "SELECT avg(price) FROM flights"),
    ("What are the numbers of the flights that depart from LHR?",
     "SELECT flight_number FROM flights WHERE origin = 'LHR'"),
    ("How many flights does each airline operate?",
     "SELECT T2.name, count(*) FROM flights AS T1 JOIN airlines AS T2 ON T1.airline_id = T2.airline_id "
     "GROUP BY T1.airline_id"),
    ("Which airline operates the most flights?",
     "SELECT T2.name FROM flights AS T1 JOIN airlines AS T2 ON T1.airline_id = T2.airline_id "
     "GROUP BY T1.airline_id ORDER BY count(*) DESC LIMIT 1"),
    ("What is the number and duration of the longest flight?",
     "SELECT flight_number, duration_minutes FROM flights ORDER BY duration_minutes DESC LIMIT 1"),
    ("Which airports have no departing flights?",
     "SELECT name FROM airports WHERE airport_code NOT IN (SELECT origin FROM flights)"),
    ("What are the numbers of the flights from Paris to an airport in Spain?",
     "SELECT T1.flight_number FROM flights AS T1 JOIN airports AS T2 ON T1.origin = T2.airport_code "
     "JOIN airports AS T3 ON T1.destination = T3.airport_code WHERE T2.city = 'Paris' AND T3.country = 'Spain'"),
    ("How many passengers have no frequent flyer level?",
     "SELECT count(*) FROM passengers WHERE frequent_flyer_level IS NULL"),
    ("How many bookings were made in each seat class?",
     "SELECT seat_class, count(*) FROM bookings GROUP BY seat_class"),
    ("What are the names of passengers who booked a first class seat?",
     "SELECT DISTINCT T1.name FROM passengers AS T1 JOIN bookings AS T2 ON T1.passenger_id = T2.passenger_id "
     "WHERE T2.seat_class = 'First'"),
    ("Which passengers have never booked a flight?",
     "SELECT name FROM passengers WHERE passenger_id NOT IN (SELECT passenger_id FROM bookings)"),
    ("What is the total amount paid for bookings on each airline?",
     "SELECT T3.name, sum(T1.amount_paid) FROM bookings AS T1 JOIN flights AS T2 ON T1.flight_id = T2.flight_id "
     "JOIN airlines AS T3 ON T2.airline_id = T3.airline_id GROUP BY T3.airline_id"),
    ("Which destination cities receive more than 12 flights?",
     "SELECT T2.city FROM flights AS T1 JOIN airports AS T2 ON T1.destination = T2.airport_code "
     "GROUP BY T2.city HAVING count(*) > 12"),
    ("Which flights cost more than the average flight? Give their numbers and prices.",
     "SELECT flight_number, price FROM flights WHERE price > (SELECT avg(price) FROM flights)"),
    ("Which countries have both an airport and an airline?",
     "SELECT country FROM airports INTERSECT SELECT country FROM airlines"),
    ("List the codes of airports that are in Italy or where a flight longer than 180 minutes departs.",
     "SELECT airport_code FROM airports WHERE country = 'Italy' "
     "UNION SELECT origin FROM flights WHERE duration_minutes > 180"),
    ("Which airlines have no flights to Rome Fiumicino (FCO)?",
     "SELECT name FROM airlines EXCEPT SELECT T1.name FROM airlines AS T1 JOIN flights AS T2 "
     "ON T1.airline_id = T2.airline_id WHERE T2.destination = 'FCO'"),
    ("What are the different nationalities of Platinum frequent flyers?",
     "SELECT DISTINCT nationality FROM passengers WHERE frequent_flyer_level = 'Platinum'"),
    ("How many flights depart in July 2024?",
     "SELECT count(*) FROM flights WHERE departure_date BETWEEN '2024-07-01' AND '2024-07-31'"),
    ("Show the name and number of bookings of every passenger with more than 5 bookings.",
     "SELECT T1.name, count(*) FROM passengers AS T1 JOIN bookings AS T2 ON T1.passenger_id = T2.passenger_id "
     "GROUP BY T1.passenger_id HAVING count(*) > 5"),
    ("What is the average duration of flights operated by Northwind Air?",
     "SELECT avg(T1.duration_minutes) FROM flights AS T1 JOIN airlines AS T2 ON T1.airline_id = T2.airline_id "
     "WHERE T2.name = 'Northwind Air'"),
    ("What are the numbers of flights with at least 5 bookings?",
     "SELECT T1.flight_number FROM flights AS T1 JOIN bookings AS T2 ON T1.flight_id = T2.flight_id "
     "GROUP BY T1.flight_id HAVING count(*) >= 5"),
    ("What are the smallest, largest and average numbers of seats on a flight?",
     "SELECT min(seats), max(seats), avg(seats) FROM flights"),
)

DATABASE = SampleDatabase("regional_flights", "dev", 505, SCHEMA_SQL, make_rows, EXAMPLES)
