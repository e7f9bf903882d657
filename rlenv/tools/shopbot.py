"""ShopBot: a ReAct shop assistant over a real SQLite database (the task of ``rlenv/ShopBot-v0``).

Each episode writes a new shop database (:func:`rlenv.tools.shop.make_shop_database`, seeded
by the episode) and a customer with a request, drawn from the task kinds:

- ``return``: "I want to return the kettle from my order of 2026-03-14". Done when a return
  label was created for the right order and item (``label[order_id, item]``) and a
  confirmation was emailed to the customer (``email[address]``). The customer gives a name,
  not an address: the bot looks it up (``sql[...]``) or asks (``ask[...]``).
- ``status``: "what is the status of my order from <date>?" Done when ``finish[...]``
  states the order's status (and no other).
- ``total``: "what was the total of order 17?" Done when ``finish[...]`` states the sum of
  price times quantity over the order's lines, in dollars.
- ``policy``: a question the policy handbook answers (``search[...]`` over
  ``rlenv/tools/handbook.yaml``, MiniLM embeddings). Done when ``finish[...]`` states the
  handbook's number.

Actions: ``sql[SELECT ...]`` (read-only, row and time limits), ``label[order_id, item]``
(the shipping API: refuses orders that are not delivered or do not hold the item),
``email[address]``, ``ask[question]`` (the simulated customer answers from their profile),
``search[query]`` (the handbook, passages cited by id) and ``finish[answer]``. The score is 1
for a request done, 0 otherwise (a return: half for the right label, half for the email); the
env subtracts the turn cost.

Held-out episodes use odd database seeds (train: even ones) and the last
``heldout_questions`` handbook questions.
"""

from __future__ import annotations

import functools
import re
import shutil
import sqlite3
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from rlenv.tools.react import Outcome, make_tool_env, make_tool_vector_env
from rlenv.tools.shop import STATUSES, make_shop_database, run_sql

KINDS = ("return", "status", "total", "policy")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
DEFAULT_PREFIX = (
    "You are ShopBot, the assistant of an online shop. Tables: customers(id, name, email, city), "
    "items(id, name, price_cents), orders(id, customer_id, placed, status), "
    "order_lines(order_id, item_id, quantity).\n"
    "Each turn: one line `Thought: ...` then one line `Action: name[argument]`, with name one of "
    "sql[SELECT ...], label[order_id, item], email[address], ask[question to the customer], "
    "search[query of the policy handbook], finish[answer to the customer].\n\n"
)


@functools.lru_cache(maxsize=1)
def handbook() -> dict[str, Any]:
    """The shipped policy handbook: ``passages`` (id -> text) and ``questions``."""
    import yaml

    data = yaml.safe_load((files("rlenv") / "tools" / "handbook.yaml").read_text(encoding="utf-8"))
    return {"passages": dict(data["passages"]), "questions": list(data["questions"])}


def stated_numbers(text: str) -> list[float]:
    """Every number written in ``text`` (commas dropped)."""
    values = []
    for match in NUMBER.findall(text or ""):
        try:
            values.append(float(match.replace(",", "")))
        except ValueError:
            continue
    return values


@dataclass
class Customer:
    """The simulated customer's profile: what they know and answer when asked."""

    name: str
    email: str
    city: str
    order_id: int | None = None
    placed: str = ""
    item: str = ""
    knows_order_id: bool = False

    def answer(self, question: str) -> str:
        """A reply to the bot's question, from the profile (keyword rules over its words)."""
        words = set(re.findall(r"[a-z]+", question.lower()))
        parts = []
        if words & {"email", "mail", "address", "e"}:
            parts.append(f"My email is {self.email}.")
        if "name" in words:
            parts.append(f"My name is {self.name}.")
        if words & {"order", "number", "id"} and self.order_id is not None:
            parts.append(
                f"It is order {self.order_id}."
                if self.knows_order_id
                else f"I don't have the order number; I ordered on {self.placed}."
            )
        if words & {"when", "date", "day"} and self.placed and not any(self.placed in p for p in parts):
            parts.append(f"I ordered on {self.placed}.")
        if words & {"item", "product", "which", "return", "returning"} and self.item:
            parts.append(f"It is the {self.item}.")
        if words & {"city", "live", "where"}:
            parts.append(f"I live in {self.city}.")
        return " ".join(parts) or "Sorry, I don't understand the question."


@dataclass
class ShopEpisode:
    """One ShopBot episode (see the module docstring)."""

    kind: str
    prompt: str
    database: Path
    customer: Customer
    truth: Any
    search: Any
    max_rows: int = 10
    labels: list[tuple[int, str]] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)

    def call(self, action: str, argument: str) -> str:
        if action == "sql":
            return run_sql(self.database, argument, max_rows=self.max_rows).as_text(max_chars=400)
        if action == "label":
            return self._label(argument)
        if action == "email":
            return self._email(argument)
        if action == "ask":
            return f"Customer: {self.customer.answer(argument)}"
        if action == "search":
            return self.search(argument)
        return f"unknown action {action!r}"

    def _label(self, argument: str) -> str:
        order_text, _, item = argument.partition(",")
        item = item.strip().strip("'\"").lower()
        try:
            order_id = int(order_text.strip().lstrip("#"))
        except ValueError:
            return f"error: write label[order_id, item], e.g. label[17, kettle]; got {argument!r}"
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as connection:
            order = connection.execute("SELECT status FROM orders WHERE id = ?", (order_id,)).fetchone()
            names = [
                row[0]
                for row in connection.execute(
                    "SELECT i.name FROM order_lines l JOIN items i ON i.id = l.item_id WHERE l.order_id = ?",
                    (order_id,),
                )
            ]
        if order is None:
            return f"error: there is no order {order_id}"
        if item not in names:
            return f"error: order {order_id} holds {', '.join(names)}, not {item!r}"
        if order[0] != "delivered":
            return f"error: order {order_id} is {order[0]}, not delivered: it cannot be returned"
        self.labels.append((order_id, item))
        return f"return label RL-{order_id:04d}-{names.index(item) + 1} created for order {order_id} ({item})"

    def _email(self, argument: str) -> str:
        address = argument.strip().strip("'\"").lower()
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as connection:
            known = connection.execute("SELECT 1 FROM customers WHERE email = ?", (address,)).fetchone()
        if known is None:
            return f"error: no customer has the address {address!r}"
        self.emails.append(address)
        return f"email sent to {address}"

    def outcome(self, answer: str | None) -> Outcome:
        if self.kind == "return":
            order_id, item = self.truth
            labelled = (order_id, item) in self.labels
            emailed = self.customer.email in self.emails
            detail = (
                f"return: order {order_id} ({item}), label {'yes' if labelled else 'no'}, "
                f"email to {self.customer.email} {'yes' if emailed else 'no'}"
            )
            return Outcome(0.5 * labelled + 0.5 * emailed, labelled and emailed, detail)
        if answer is None:
            return Outcome(0.0, False, f"{self.kind}: no finish[...] answer (expected {self.truth})")
        if self.kind == "status":
            said = {status for status in STATUSES if status in answer.lower()}
            done = said == {self.truth}
        else:
            done = any(abs(value - float(self.truth)) < 0.005 for value in stated_numbers(answer))
        verdict = "correct" if done else f"wrong (expected {self.truth})"
        return Outcome(float(done), done, f"{self.kind}: answer {answer[:60]!r} {verdict}")


class ShopTask:
    """The ShopBot task (see the module docstring), a :class:`rlenv.tools.react.ToolTask`.

    Args:
        kinds: weights of the task kinds, e.g. ``{return: 0.4, status: 0.2, total: 0.2, policy: 0.2}``.
        prefix: text before the customer's message (instructions, schema, few-shot examples).
        customers, orders: database size.
        max_rows: rows an SQL observation shows.
        heldout_questions: handbook questions kept for the held-out split.
        encoder: the sentence encoder of the handbook search (default MiniLM; any callable
            ``texts -> (N, D)`` unit-length embeddings).
        search_k: passages a search returns.
    """

    actions = ("sql", "label", "email", "ask", "search")

    def __init__(
        self,
        kinds: Mapping[str, float] | None = None,
        prefix: str = DEFAULT_PREFIX,
        customers: int = 30,
        orders: int = 60,
        max_rows: int = 10,
        heldout_questions: int = 2,
        encoder: Any = None,
        search_k: int = 2,
        cache: int = 256,
    ) -> None:
        weights = dict(kinds or {"return": 0.4, "status": 0.2, "total": 0.2, "policy": 0.2})
        unknown = sorted(set(weights) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown ShopBot task kind(s) {unknown}; valid: {list(KINDS)}")
        bad = any(not isinstance(w, (int, float)) or w < 0 for w in weights.values())
        if bad or not sum(weights.values()):
            raise ValueError(f"kinds must map task kinds to non-negative weights, not all 0; got {weights}")
        questions = handbook()["questions"]
        if not 0 < heldout_questions < len(questions):
            raise ValueError(
                f"heldout_questions must be in [1, {len(questions) - 1}], got {heldout_questions}"
            )
        self.kinds = [kind for kind in KINDS if weights.get(kind, 0) > 0]
        total = sum(weights[kind] for kind in self.kinds)
        self.weights = [weights[kind] / total for kind in self.kinds]
        self.prefix, self.customers, self.orders = str(prefix), int(customers), int(orders)
        self.max_rows, self.search_k = int(max_rows), int(search_k)
        self.questions = {
            "train": questions[: len(questions) - heldout_questions],
            "heldout": questions[len(questions) - heldout_questions :],
        }
        self.encoder = encoder
        self._store: Any = None
        self._folder = Path(tempfile.mkdtemp(prefix="rlenv-shop-"))
        self._files: OrderedDict[int, Path] = OrderedDict()
        self._cache = max(16, int(cache))

    def search(self, query: str) -> str:
        if self._store is None:
            from rlenv.tools.retrieval import VectorStore

            self._store = VectorStore(handbook()["passages"], encoder=self.encoder)
        return self._store.observation(query, k=self.search_k)

    def _database(self, seed: int) -> Path:
        if seed in self._files:
            self._files.move_to_end(seed)
            return self._files[seed]
        path = make_shop_database(self._folder / f"shop-{seed}.sqlite", seed, self.customers, self.orders)
        self._files[seed] = path
        while len(self._files) > self._cache:
            _, old = self._files.popitem(last=False)
            old.unlink(missing_ok=True)
        return path

    def episode(self, rng: np.random.Generator, split: str) -> ShopEpisode:
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.weights))]
        seed = 2 * int(rng.integers(2**30)) + (split == "heldout")
        database = self._database(seed)
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT o.id, o.placed, o.status, c.name, c.email, c.city, i.name FROM orders o "
                "JOIN customers c ON c.id = o.customer_id JOIN order_lines l ON l.order_id = o.id "
                "JOIN items i ON i.id = l.item_id ORDER BY o.id, i.id"
            ).fetchall()
            totals = dict(
                connection.execute(
                    "SELECT l.order_id, SUM(l.quantity * i.price_cents) FROM order_lines l "
                    "JOIN items i ON i.id = l.item_id GROUP BY l.order_id"
                ).fetchall()
            )
        orders = list({row[0]: row for row in rows}.values())  # one row per order (its first line)
        names = [row[3] for row in orders]
        unique_name = {name for name in names if names.count(name) == 1}
        dates = [(row[4], row[1]) for row in orders]
        truth: Any
        if kind == "return":
            choices = [r for r in rows if r[2] == "delivered" and r[3] in unique_name]
            choices = choices or [r for r in rows if r[2] == "delivered"] or rows
            order_id, placed, _, name, email, city, item = choices[int(rng.integers(len(choices)))]
            customer = Customer(name, email, city, order_id, placed, item)
            message = f"Hi, I'm {name}. I want to return the {item} from my order of {placed}."
            truth = (order_id, item)
        elif kind == "status":
            choices = [r for r in orders if dates.count((r[4], r[1])) == 1] or orders
            order_id, placed, status, name, email, city, _ = choices[int(rng.integers(len(choices)))]
            customer = Customer(name, email, city, order_id, placed, knows_order_id=False)
            message = f"Hello, my email is {email}. What is the status of my order from {placed}?"
            truth = status
        elif kind == "total":
            order_id, placed, _, name, email, city, _ = orders[int(rng.integers(len(orders)))]
            customer = Customer(name, email, city, order_id, placed, knows_order_id=True)
            message = f"Hi, this is {name} ({email}). What was the total of order {order_id}, in dollars?"
            truth = round(totals[order_id] / 100, 2)
        else:
            questions = self.questions[split]
            question = questions[int(rng.integers(len(questions)))]
            person = rows[int(rng.integers(len(rows)))]
            customer = Customer(person[3], person[4], person[5])
            message, truth = str(question["question"]), question["answer"]
        prompt = f"{self.prefix}Customer: {message}\nThought:"
        return ShopEpisode(kind, prompt, database, customer, truth, self.search, self.max_rows)

    def close(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)
        self._files.clear()

    def __del__(self) -> None:
        folder = getattr(self, "_folder", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


# ``rlenv/ShopBot-v0`` (``task=``: the ShopTask arguments)
make_shopbot_env = functools.partial(make_tool_env, ShopTask)
make_shopbot_vector_env = functools.partial(make_tool_vector_env, ShopTask)
