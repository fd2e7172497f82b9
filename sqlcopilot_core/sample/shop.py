"""Training database online_shop: customers, products, their orders and the items in each order.

    python -c "from sqlcopilot_core.sample.shop import DATABASE; print(len(DATABASE.examples))"
"""

from __future__ import annotations

import random

from sqlcopilot_core.sample.common import (
    CITIES, Rows, SampleDatabase, random_date, sometimes_null, unique_person_names, weighted_choice,
)

SCHEMA_SQL = """
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    city TEXT,
    signup_date DATE,
    loyalty_tier TEXT
);
CREATE TABLE products (
    product_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price REAL NOT NULL,
    stock INTEGER NOT NULL
);
CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL,
    order_date DATE NOT NULL,
    status TEXT NOT NULL,
    shipping_city TEXT,
    FOREIGN KEY (customer_id) REFERENCES customers (customer_id)
);
CREATE TABLE order_items (
    item_id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price REAL NOT NULL,
    FOREIGN KEY (order_id) REFERENCES orders (order_id),
    FOREIGN KEY (product_id) REFERENCES products (product_id)
);
"""

PRODUCTS = [  # (name, category, list price)
    ("Wireless Mouse", "Electronics", 25.0), ("Mechanical Keyboard", "Electronics", 89.0),
    ("USB-C Charger", "Electronics", 19.0), ("Noise Cancelling Headphones", "Electronics", 199.0),
    ("Smart Watch", "Electronics", 249.0), ("4K Monitor", "Electronics", 329.0),
    ("Bluetooth Speaker", "Electronics", 59.0), ("Desk Lamp", "Home", 35.0), ("Floor Lamp", "Home", 79.0),
    ("Cotton Bed Sheets", "Home", 45.0), ("Ceramic Vase", "Home", 29.0), ("Coffee Maker", "Kitchen", 99.0),
    ("Chef Knife", "Kitchen", 65.0), ("Cast Iron Pan", "Kitchen", 42.0), ("Electric Kettle", "Kitchen", 38.0),
    ("Blender", "Kitchen", 120.0), ("Running Shoes", "Sports", 110.0), ("Yoga Mat", "Sports", 22.0),
    ("Tennis Racket", "Sports", 140.0), ("Water Bottle", "Sports", 15.0), ("Cycling Helmet", "Sports", 75.0),
    ("Mystery Novel", "Books", 12.0), ("Cookbook", "Books", 28.0), ("Travel Guide", "Books", 18.0),
    ("Science Encyclopedia", "Books", 55.0), ("Board Game", "Toys", 34.0), ("Puzzle 1000 Pieces", "Toys", 19.0),
    ("Remote Control Car", "Toys", 48.0),
]
# Fixed rather than random so that the "never ordered" and "low stock" questions always have answers.
NEVER_ORDERED = ("Ceramic Vase", "Cycling Helmet", "Remote Control Car")
LOW_STOCK = ("Smart Watch", "Blender", "Board Game")


def make_customers(rng: random.Random) -> list[tuple]:
    customers = []
    for customer_id, name in enumerate(unique_person_names(rng, 80), start=1):
        email = sometimes_null(rng, name.lower().replace(" ", ".").replace("'", "") + "@example.com", 0.1)
        city = sometimes_null(rng, rng.choice(CITIES), 0.05)
        tier = weighted_choice(rng, {"bronze": 40, "silver": 30, "gold": 15, None: 15})
        customers.append((customer_id, name, email, city, random_date(rng, "2021-01-01", "2023-12-31"), tier))
    return customers


def make_products(rng: random.Random) -> list[tuple]:
    products = []
    for product_id, (name, category, list_price) in enumerate(PRODUCTS, start=1):
        stock = rng.randint(0, 9) if name in LOW_STOCK else rng.randint(12, 200)
        products.append((product_id, name, category, round(list_price * rng.uniform(0.9, 1.1), 2), stock))
    return products


def make_rows(rng: random.Random) -> Rows:
    customers, products = make_customers(rng), make_products(rng)
    ordering_customers = customers[:68]  # the last 12 customers never order
    orderable = [product for product in products if product[1] not in NEVER_ORDERED]
    orders, items = [], []
    for order_id in range(1, 221):
        customer = rng.choice(ordering_customers)
        shipping_city = customer[3] if rng.random() < 0.85 else rng.choice(CITIES)
        status = weighted_choice(rng, {"delivered": 60, "shipped": 15, "pending": 10, "cancelled": 15})
        orders.append((order_id, customer[0], random_date(rng, "2023-01-01", "2024-06-30"), status, shipping_city))
        for product in rng.sample(orderable, rng.randint(1, 4)):
            quantity = weighted_choice(rng, {1: 40, 2: 30, 3: 15, 4: 10, 5: 5})
            unit_price = product[3] if rng.random() < 0.8 else round(product[3] * 0.85, 2)  # on sale
            items.append((len(items) + 1, order_id, product[0], quantity, unit_price))
    return {"customers": customers, "products": products, "orders": orders, "order_items": items}


EXAMPLES = (
    ("How many customers does the shop have?", "SELECT count(*) FROM customers"),
    ("List the names and emails of customers who live in Paris.",
     "SELECT name, email FROM customers WHERE city = 'Paris'"),
    ("What are the names of all products in the Kitchen category?",
     "SELECT name FROM products WHERE category = 'Kitchen'"),
    ("What is the average price of a product?", "SELECT avg(price) FROM products"),
    ("Show the names and prices of products that cost more than 100, most expensive first.",
     "SELECT name, price FROM products WHERE price > 100 ORDER BY price DESC"),
    ("How many orders were cancelled?", "SELECT count(*) FROM orders WHERE status = 'cancelled'"),
    ("How many customers live in each city?", "SELECT city, count(*) FROM customers GROUP BY city"),
    ("Which product categories have more than 4 products?",
     "SELECT category FROM products GROUP BY category HAVING count(*) > 4"),
    ("What are the names of the three most expensive products?",
     "SELECT name FROM products ORDER BY price DESC LIMIT 3"),
    ("Which product is the cheapest, and what does it cost?",
     "SELECT name, price FROM products ORDER BY price ASC LIMIT 1"),
    ("What are the different order statuses?", "SELECT DISTINCT status FROM orders"),
    ("Give the names of customers who have placed at least one order.",
     "SELECT DISTINCT T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id"),
    ("Find the names of customers who have never placed an order.",
     "SELECT name FROM customers WHERE customer_id NOT IN (SELECT customer_id FROM orders)"),
    ("For each customer, show the name and the number of orders they placed.",
     "SELECT T1.name, count(*) FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id "
     "GROUP BY T1.customer_id"),
    ("Which customer placed the most orders?",
     "SELECT T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id "
     "GROUP BY T1.customer_id ORDER BY count(*) DESC LIMIT 1"),
    ("What is the total quantity sold in each product category?",
     "SELECT T2.category, sum(T1.quantity) FROM order_items AS T1 JOIN products AS T2 "
     "ON T1.product_id = T2.product_id GROUP BY T2.category"),
    ("What is the total revenue from delivered orders?",
     "SELECT sum(T1.quantity * T1.unit_price) FROM order_items AS T1 JOIN orders AS T2 "
     "ON T1.order_id = T2.order_id WHERE T2.status = 'delivered'"),
    ("Which products have never been ordered?",
     "SELECT name FROM products WHERE product_id NOT IN (SELECT product_id FROM order_items)"),
    ("List the names of products priced above the average product price.",
     "SELECT name FROM products WHERE price > (SELECT avg(price) FROM products)"),
    ("Which cities have both gold tier and bronze tier customers?",
     "SELECT city FROM customers WHERE loyalty_tier = 'gold' "
     "INTERSECT SELECT city FROM customers WHERE loyalty_tier = 'bronze'"),
    ("Give the names of customers who live in London or in Berlin.",
     "SELECT name FROM customers WHERE city = 'London' UNION SELECT name FROM customers WHERE city = 'Berlin'"),
    ("Which categories have no product with fewer than 10 units in stock?",
     "SELECT category FROM products EXCEPT SELECT category FROM products WHERE stock < 10"),
    ("How many customers have no email address on file?", "SELECT count(*) FROM customers WHERE email IS NULL"),
    ("How many orders were placed in March 2024?",
     "SELECT count(*) FROM orders WHERE order_date BETWEEN '2024-03-01' AND '2024-03-31'"),
    ("What are the highest and lowest product prices in each category?",
     "SELECT category, max(price), min(price) FROM products GROUP BY category"),
    ("Which products are bought more than 2 at a time on average? List their names.",
     "SELECT T2.name FROM order_items AS T1 JOIN products AS T2 ON T1.product_id = T2.product_id "
     "GROUP BY T1.product_id HAVING avg(T1.quantity) > 2"),
    ("What are the names of the customers who have bought a book?",
     "SELECT DISTINCT T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id "
     "JOIN order_items AS T3 ON T2.order_id = T3.order_id JOIN products AS T4 ON T3.product_id = T4.product_id "
     "WHERE T4.category = 'Books'"),
    ("List every product whose name contains the word Lamp.", "SELECT name FROM products WHERE name LIKE '%Lamp%'"),
    ("List the names of gold tier customers in the order they signed up.",
     "SELECT name FROM customers WHERE loyalty_tier = 'gold' ORDER BY signup_date"),
    ("How many orders were shipped to each city that received at least 20 orders?",
     "SELECT shipping_city, count(*) FROM orders GROUP BY shipping_city HAVING count(*) >= 20"),
    ("On average, how many different products does an order contain?",
     "SELECT avg(item_count) FROM (SELECT count(*) AS item_count FROM order_items GROUP BY order_id)"),
    ("What are the statuses and dates of orders placed by customers from Rome?",
     "SELECT T2.status, T2.order_date FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id "
     "WHERE T1.city = 'Rome'"),
)

DATABASE = SampleDatabase("online_shop", "train", 101, SCHEMA_SQL, make_rows, EXAMPLES)
