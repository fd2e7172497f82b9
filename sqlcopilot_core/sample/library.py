"""Training database city_library: authors, their books, library members and the loans of books to members.

    python -c "from sqlcopilot_core.sample.library import DATABASE; print(len(DATABASE.examples))"
"""

from __future__ import annotations

import random

from sqlcopilot_core.sample.common import (
    Rows, SampleDatabase, days_after, random_date, sometimes_null, unique_person_names, weighted_choice,
)

SCHEMA_SQL = """
CREATE TABLE authors (
    author_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    nationality TEXT,
    birth_year INTEGER
);
CREATE TABLE books (
    book_id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    author_id INTEGER NOT NULL,
    genre TEXT NOT NULL,
    publication_year INTEGER,
    pages INTEGER,
    copies INTEGER NOT NULL,
    FOREIGN KEY (author_id) REFERENCES authors (author_id)
);
CREATE TABLE members (
    member_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    membership_type TEXT NOT NULL,
    join_date DATE NOT NULL,
    birth_year INTEGER
);
CREATE TABLE loans (
    loan_id INTEGER PRIMARY KEY,
    book_id INTEGER NOT NULL,
    member_id INTEGER NOT NULL,
    loan_date DATE NOT NULL,
    return_date DATE,
    fine REAL,
    FOREIGN KEY (book_id) REFERENCES books (book_id),
    FOREIGN KEY (member_id) REFERENCES members (member_id)
);
"""

AUTHORS = [  # (name, nationality, birth year or None when unknown)
    ("Mara Lindqvist", "Swedish", 1968), ("Julian Ashcroft", "British", 1952), ("Colette Marchand", "French", 1947),
    ("Kenji Watanabe", "Japanese", 1971), ("Amara Okafor", "Nigerian", 1983), ("Rafael Duarte", "Brazilian", 1959),
    ("Priya Raman", "Indian", 1976), ("Helen Whitfield", "British", 1941), ("Samuel Brooks", "American", 1965),
    ("Lucia Ferrante", "Italian", 1980), ("Dieter Hoffmann", "German", 1949), ("Grace Donovan", "American", 1988),
    ("Ines Carvalho", "Portuguese", None), ("Tomas Novak", "Czech", 1962), ("Eleanor Price", "American", 1939),
    ("Yusuf Demir", "Turkish", 1974), ("Camille Roux", "French", 1991), ("Oliver Grant", "British", None),
    ("Sofia Alvarez", "Spanish", 1985), ("Henrik Dahl", "Norwegian", 1957), ("Aiko Tanaka", "Japanese", 1969),
    ("Patrick Kelly", "Irish", None),
]
AUTHORS_WITHOUT_BOOKS = ("Grace Donovan", "Henrik Dahl")
GENRES = ["Fiction", "Mystery", "Science Fiction", "Fantasy", "History", "Biography", "Poetry", "Science"]
TITLE_ADJECTIVES = ["Silent", "Hidden", "Last", "Golden", "Broken", "Distant", "Burning", "Forgotten", "Winter",
                    "Crimson", "Quiet", "Endless", "Secret", "Northern", "Glass"]
TITLE_NOUNS = ["River", "Garden", "Harbor", "Empire", "Letter", "Mountain", "Library", "Storm", "Mirror", "Orchard",
               "Voyage", "Kingdom", "Lantern", "Island", "Archive"]


def make_books(rng: random.Random) -> list[tuple]:
    titles = rng.sample([f"The {adj} {noun}" for adj in TITLE_ADJECTIVES for noun in TITLE_NOUNS], 120)
    writing_authors = [i for i, author in enumerate(AUTHORS, start=1) if author[0] not in AUTHORS_WITHOUT_BOOKS]
    favourite_genre = {author_id: rng.choice(GENRES) for author_id in writing_authors}
    books = []
    for book_id, title in enumerate(titles, start=1):
        author_id = rng.choice(writing_authors)
        # Authors mostly stay in one genre, as real ones do; the rest is spread over all genres.
        genre = favourite_genre[author_id] if rng.random() < 0.6 else rng.choice(GENRES)
        pages = sometimes_null(rng, rng.randint(90, 900), 0.05)
        books.append((book_id, title, author_id, genre, rng.randint(1950, 2023), pages, rng.randint(1, 6)))
    return books


def make_loans(rng: random.Random, books: list[tuple], members: list[tuple]) -> list[tuple]:
    borrowing_members = members[:80]  # the last 10 members never borrow
    loans = []
    for loan_id in range(1, 261):
        loan_date = random_date(rng, "2023-01-01", "2024-05-31")
        days_kept = rng.randint(5, 40)
        returned = rng.random() > 0.15
        fine = round(0.5 * (days_kept - 21), 2) if returned and days_kept > 21 else None
        return_date = days_after(loan_date, days_kept) if returned else None
        loans.append((loan_id, rng.choice(books)[0], rng.choice(borrowing_members)[0], loan_date, return_date, fine))
    return loans


def make_rows(rng: random.Random) -> Rows:
    authors = [(author_id, *author) for author_id, author in enumerate(AUTHORS, start=1)]
    books = make_books(rng)
    members = []
    for member_id, name in enumerate(unique_person_names(rng, 90), start=1):
        membership = weighted_choice(rng, {"standard": 60, "student": 25, "senior": 15})
        birth_year = sometimes_null(rng, rng.randint(1940, 2008), 0.05)
        members.append((member_id, name, membership, random_date(rng, "2018-01-01", "2024-03-31"), birth_year))
    return {"authors": authors, "books": books, "members": members, "loans": make_loans(rng, books, members)}


EXAMPLES = (
    ("How many books are in the catalogue?", "SELECT count(*) FROM books"),
    ("List the titles of all mystery books.", "SELECT title FROM books WHERE genre = 'Mystery'"),
    ("What are the names and nationalities of all authors?", "SELECT name, nationality FROM authors"),
    ("How many authors are French?", "SELECT count(*) FROM authors WHERE nationality = 'French'"),
    ("What is the title of the longest book?", "SELECT title FROM books ORDER BY pages DESC LIMIT 1"),
    ("What is the average number of pages of books in each genre?",
     "SELECT genre, avg(pages) FROM books GROUP BY genre"),
    ("Which genres have at least 15 books?", "SELECT genre FROM books GROUP BY genre HAVING count(*) >= 15"),
    ("Show the title and year of books published after 2010, newest first.",
     "SELECT title, publication_year FROM books WHERE publication_year > 2010 ORDER BY publication_year DESC"),
    ("How many members are there of each membership type?",
     "SELECT membership_type, count(*) FROM members GROUP BY membership_type"),
    ("What are the titles of the books written by Mara Lindqvist?",
     "SELECT T1.title FROM books AS T1 JOIN authors AS T2 ON T1.author_id = T2.author_id "
     "WHERE T2.name = 'Mara Lindqvist'"),
    ("How many books has each author written? Show the author's name and the count.",
     "SELECT T2.name, count(*) FROM books AS T1 JOIN authors AS T2 ON T1.author_id = T2.author_id "
     "GROUP BY T1.author_id"),
    ("Which author has written the most books?",
     "SELECT T2.name FROM books AS T1 JOIN authors AS T2 ON T1.author_id = T2.author_id "
     "GROUP BY T1.author_id ORDER BY count(*) DESC LIMIT 1"),
    ("Which authors have no books in the library?",
     "SELECT name FROM authors WHERE author_id NOT IN (SELECT author_id FROM books)"),
    ("How many loans have not been returned yet?", "SELECT count(*) FROM loans WHERE return_date IS NULL"),
    ("What are the names of members who still have a borrowed book at home?",
     "SELECT DISTINCT T1.name FROM members AS T1 JOIN loans AS T2 ON T1.member_id = T2.member_id "
     "WHERE T2.return_date IS NULL"),
    ("Which members have never borrowed a book?",
     "SELECT name FROM members WHERE member_id NOT IN (SELECT member_id FROM loans)"),
    ("What is the total amount of fines charged?", "SELECT sum(fine) FROM loans"),
    ("What are the titles of the books borrowed by student members?",
     "SELECT DISTINCT T3.title FROM members AS T1 JOIN loans AS T2 ON T1.member_id = T2.member_id "
     "JOIN books AS T3 ON T2.book_id = T3.book_id WHERE T1.membership_type = 'student'"),
    ("Which book has been borrowed the most times?",
     "SELECT T1.title FROM books AS T1 JOIN loans AS T2 ON T1.book_id = T2.book_id "
     "GROUP BY T1.book_id ORDER BY count(*) DESC LIMIT 1"),
    ("List the titles of books that have more pages than the average book.",
     "SELECT title FROM books WHERE pages > (SELECT avg(pages) FROM books)"),
    ("Which genres include books by both British and American authors?",
     "SELECT T1.genre FROM books AS T1 JOIN authors AS T2 ON T1.author_id = T2.author_id "
     "WHERE T2.nationality = 'British' INTERSECT SELECT T1.genre FROM books AS T1 JOIN authors AS T2 "
     "ON T1.author_id = T2.author_id WHERE T2.nationality = 'American'"),
    ("What are the titles of the books that nobody has borrowed?",
     "SELECT title FROM books EXCEPT SELECT T1.title FROM books AS T1 JOIN loans AS T2 ON T1.book_id = T2.book_id"),
    ("Give the titles of books that are either poetry or shorter than 150 pages.",
     "SELECT title FROM books WHERE genre = 'Poetry' UNION SELECT title FROM books WHERE pages < 150"),
    ("How many different members borrowed books in 2024?",
     "SELECT count(DISTINCT member_id) FROM loans WHERE loan_date >= '2024-01-01'"),
    ("What are the earliest and latest publication years in the collection?",
     "SELECT min(publication_year), max(publication_year) FROM books"),
    ("What is the average fine for each membership type?",
     "SELECT T1.membership_type, avg(T2.fine) FROM members AS T1 JOIN loans AS T2 ON T1.member_id = T2.member_id "
     "GROUP BY T1.membership_type"),
    ("Which loans lasted more than 30 days? Show the book title and the member's name.",
     "SELECT T3.title, T1.name FROM members AS T1 JOIN loans AS T2 ON T1.member_id = T2.member_id "
     "JOIN books AS T3 ON T2.book_id = T3.book_id WHERE julianday(T2.return_date) - julianday(T2.loan_date) > 30"),
    ("Which authors were born before 1960? List them from oldest to youngest.",
     "SELECT name FROM authors WHERE birth_year < 1960 ORDER BY birth_year"),
    ("How many copies of science books does the library hold in total?",
     "SELECT sum(copies) FROM books WHERE genre = 'Science'"),
    ("Find the names of authors who have written books in more than two genres.",
     "SELECT T2.name FROM books AS T1 JOIN authors AS T2 ON T1.author_id = T2.author_id "
     "GROUP BY T1.author_id HAVING count(DISTINCT T1.genre) > 2"),
    ("How many members joined in each year?",
     "SELECT strftime('%Y', join_date), count(*) FROM members GROUP BY strftime('%Y', join_date)"),
)

DATABASE = SampleDatabase("city_library", "train", 202, SCHEMA_SQL, make_rows, EXAMPLES)
