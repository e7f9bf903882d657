"""The shop database of the ShopBot tasks: a seeded SQLite file and a read-only SQL tool.

:func:`make_shop_database` writes customers, items, orders and their lines, generated from a
seed (the same seed gives the same rows, byte for byte in :func:`database_digest`).
:func:`run_sql` is the tool an agent calls: one ``SELECT`` (or ``WITH ... SELECT``) on a
connection opened read-only, with an authorizer that allows reading and nothing else (no
writes, no ``ATTACH``, no ``PRAGMA``, no extension loading), a time limit enforced by a
progress handler, and at most ``max_rows`` rows returned. Every failure is returned as a
message (an observation for the agent), never raised.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlenv.tools.problems import NAMES

SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE,
                        city TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                     placed TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE order_lines (order_id INTEGER NOT NULL REFERENCES orders(id),
                          item_id INTEGER NOT NULL REFERENCES items(id), quantity INTEGER NOT NULL,
                          PRIMARY KEY (order_id, item_id));
"""
SURNAMES = ("Silva", "Okafor", "Novak", "Haddad", "Kim", "Moreau", "Ivanova", "Brennan", "Tanaka", "Costa")
CITIES = ("Lisbon", "Lagos", "Prague", "Beirut", "Seoul", "Lyon", "Kazan", "Cork", "Osaka", "Porto")
ITEM_NAMES = (
    "kettle", "desk lamp", "backpack", "rain jacket", "headphones", "water bottle", "notebook",
    "phone case", "yoga mat", "coffee grinder", "umbrella", "wool scarf", "bike light", "tea set",
)  # fmt: skip
STATUSES = ("processing", "shipped", "delivered", "returned")
READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)


@dataclass(frozen=True)
class SQLResult:
    """What a query gave: ``rows`` (tuples) and ``columns``, or an ``error`` message."""

    columns: tuple[str, ...] = ()
    rows: tuple[tuple, ...] = ()
    error: str = ""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.error

    def as_text(self, max_chars: int = 800) -> str:
        """The result as the text an agent reads (columns, then one row per line)."""
        if self.error:
            return f"error: {self.error}"
        lines = [" | ".join(self.columns)] + [" | ".join(str(v) for v in row) for row in self.rows]
        if self.truncated:
            lines.append(f"(more rows not shown; at most {len(self.rows)})")
        text = "\n".join(lines) if self.rows else " | ".join(self.columns) + "\n(no rows)"
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def make_shop_database(
    path: str | os.PathLike[str], seed: int = 0, customers: int = 40, orders: int = 120
) -> Path:
    """Write a new shop database at ``path`` (replacing any file there, atomically)."""
    if customers < 1 or orders < 1:
        raise ValueError(f"customers and orders must be >= 1, got {customers}, {orders}")
    rng = np.random.default_rng(seed)
    path = Path(path)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    connection = sqlite3.connect(staging)
    try:
        connection.executescript(SCHEMA)
        people = []
        for k in range(customers):
            first, last = str(rng.choice(NAMES)), str(rng.choice(SURNAMES))
            people.append(
                (
                    k + 1,
                    f"{first} {last}",
                    f"{first}.{last}.{k + 1}@example.com".lower(),
                    str(rng.choice(CITIES)),
                )
            )
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", people)
        prices = [int(rng.integers(300, 15000)) for _ in ITEM_NAMES]
        connection.executemany(
            "INSERT INTO items VALUES (?, ?, ?)",
            [(k + 1, name, price) for k, (name, price) in enumerate(zip(ITEM_NAMES, prices, strict=True))],
        )
        for order in range(1, orders + 1):
            day = int(rng.integers(1, 360))
            placed = time.strftime("%Y-%m-%d", time.gmtime(1_767_225_600 + day * 86_400))  # days of 2026
            customer, status = int(rng.integers(1, customers + 1)), str(rng.choice(STATUSES))
            connection.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (order, customer, placed, status))
            chosen = rng.choice(len(ITEM_NAMES), size=int(rng.integers(1, 4)), replace=False)
            connection.executemany(
                "INSERT INTO order_lines VALUES (?, ?, ?)",
                [(order, int(item) + 1, int(rng.integers(1, 4))) for item in chosen],
            )
        connection.commit()
    finally:
        connection.close()
    os.replace(staging, path)
    return path


def database_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of every row of every table, in key order (equal digests: equal contents)."""
    connection = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    digest = hashlib.sha256()
    try:
        tables = [
            r[0]
            for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2'):
                digest.update(repr((table, row)).encode())
    finally:
        connection.close()
    return digest.hexdigest()


def _authorize(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in READ_ACTIONS or action == RECURSIVE else sqlite3.SQLITE_DENY


def run_sql(
    path: str | os.PathLike[str], query: str, *, max_rows: int = 20, seconds: float = 1.0
) -> SQLResult:
    """Run one read-only query on the database at ``path`` (see the module docstring)."""
    if not isinstance(query, str) or not query.strip():
        return SQLResult(error="empty query; write one SELECT statement")
    if not Path(path).is_file():
        return SQLResult(error="the database is missing")
    connection = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, check_same_thread=False)
    deadline = time.monotonic() + seconds
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_authorize)
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        cursor = connection.execute(query.strip().rstrip(";"))
        rows = cursor.fetchmany(max_rows + 1)
        columns = tuple(d[0] for d in cursor.description or ())
        return SQLResult(columns, tuple(rows[:max_rows]), truncated=len(rows) > max_rows)
    except (sqlite3.Warning, sqlite3.ProgrammingError) as error:
        if "one statement" in str(error):
            return SQLResult(error="only one statement at a time")
        return SQLResult(error=f"{type(error).__name__}: {str(error)[:200]}")
    except sqlite3.OperationalError as error:
        text = str(error)
        if "interrupted" in text:
            return SQLResult(error=f"the query ran past its {seconds:g} s limit")
        if "not authorized" in text or "readonly" in text:
            return SQLResult(error="the database is read-only: only SELECT queries are allowed")
        return SQLResult(error=text[:200])
    except sqlite3.Error as error:
        return SQLResult(error=f"{type(error).__name__}: {str(error)[:200]}")
    finally:
        connection.close()
