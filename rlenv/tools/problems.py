"""Arithmetic word problems with exact answers, generated offline from a seed.

:func:`word_problems` draws GSM-style problems (two to four operations on small integers, a
person, an object, a story) from a dozen templates; every answer is a non-negative integer
computed with the numbers drawn, so it is exact. The same ``count`` and ``seed`` always give
the same problems, without duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NAMES = (
    "Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas",
    "Kira", "Liam", "Maya", "Noah", "Olga", "Pavel", "Rosa", "Sam", "Tara", "Omar",
)  # fmt: skip
THINGS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "books", "shells", "cards", "eggs")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int


def _t_buy_give(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    x, y = int(r.integers(5, 60)), int(r.integers(2, 40))
    z = int(r.integers(1, x + y))
    return Problem(
        f"{a} has {x} {thing}. {a} buys {y} more and then gives {z} to {b}. "
        f"How many {thing} does {a} have now?",
        x + y - z,
    )


def _t_boxes(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    x, y, z = int(r.integers(3, 25)), int(r.integers(2, 12)), int(r.integers(1, 20))
    return Problem(
        f"A box holds {x} {thing}. {a} fills {y} boxes and has {z} {thing} left over. "
        f"How many {thing} did {a} start with?",
        x * y + z,
    )


def _t_share(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    each, friends = int(r.integers(2, 20)), int(r.integers(2, 9))
    return Problem(
        f"{a} shares {each * friends} {thing} equally among {friends} friends. "
        f"How many {thing} does each friend get?",
        each,
    )


def _t_wage(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    x, y, z = int(r.integers(8, 30)), int(r.integers(2, 9)), int(r.integers(2, 7))
    return Problem(
        f"{a} earns {x} dollars an hour and works {y} hours a day for {z} days. "
        f"How many dollars does {a} earn?",
        x * y * z,
    )


def _t_change(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    price, count = int(r.integers(2, 15)), int(r.integers(2, 7))
    bill = next(n for n in (20, 50, 100, 200) if n > price * count)
    return Problem(
        f"A shop sells {thing} at {price} dollars each. {a} buys {count} of them and pays with a "
        f"{bill}-dollar bill. How many dollars of change does {a} get?",
        bill - price * count,
    )


def _t_pages(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    per_day, days = int(r.integers(5, 40)), int(r.integers(2, 10))
    total = per_day * days + int(r.integers(1, 200))
    return Problem(
        f"{a}'s book has {total} pages. {a} reads {per_day} pages a day for {days} days. "
        "How many pages are left to read?",
        total - per_day * days,
    )


def _t_chairs(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    rows, per_row = int(r.integers(3, 20)), int(r.integers(4, 16))
    taken = int(r.integers(1, rows * per_row))
    return Problem(
        f"A hall has {rows} rows of {per_row} chairs. {taken} chairs are taken. How many chairs are free?",
        rows * per_row - taken,
    )


def _t_ages(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    age, extra = int(r.integers(3, 30)), int(r.integers(1, 15))
    return Problem(
        f"{a} is {age} years old. {b} is {extra} years older than twice {a}'s age. How old is {b}?",
        2 * age + extra,
    )


def _t_trip(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    v1, h1, v2, h2 = (
        int(r.integers(20, 90)),
        int(r.integers(1, 5)),
        int(r.integers(20, 90)),
        int(r.integers(1, 5)),
    )
    return Problem(
        f"A train travels at {v1} km per hour for {h1} hours, then at {v2} km per hour for {h2} hours. "
        "How many km does it travel in all?",
        v1 * h1 + v2 * h2,
    )


def _t_collect(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    x, times, lost = int(r.integers(2, 30)), int(r.integers(2, 5)), int(r.integers(0, 10))
    return Problem(
        f"{a} collects {x} {thing} on Monday and {times} times as many on Tuesday, then loses {lost}. "
        f"How many {thing} does {a} have?",
        x + times * x - lost,
    )


def _t_split_rest(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    kids, each, kept = int(r.integers(2, 7)), int(r.integers(2, 12)), int(r.integers(1, 25))
    return Problem(
        f"{a} had some {thing}, kept {kept} and gave {each} to each of {kids} children. How many {thing} did "
        f"{a} have at first?",
        kept + kids * each,
    )


def _t_weeks(r: np.random.Generator, a: str, b: str, thing: str) -> Problem:
    per_day, weeks, spent = int(r.integers(1, 10)), int(r.integers(1, 5)), int(r.integers(0, 20))
    saved = per_day * 7 * weeks
    spent = min(spent, saved)
    return Problem(
        f"{a} saves {per_day} dollars every day for {weeks} weeks and then spends {spent} dollars. "
        f"How many dollars does {a} have left?",
        saved - spent,
    )


TEMPLATES: tuple[Callable[[np.random.Generator, str, str, str], Problem], ...] = (
    _t_buy_give, _t_boxes, _t_share, _t_wage, _t_change, _t_pages,
    _t_chairs, _t_ages, _t_trip, _t_collect, _t_split_rest, _t_weeks,
)  # fmt: skip


def word_problems(count: int = 2000, seed: int = 0) -> list[Problem]:
    """``count`` distinct problems drawn with ``seed`` (templates in turn, random numbers)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    problems: dict[str, Problem] = {}
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 50 * count:
            raise ValueError(f"cannot draw {count} distinct problems (got {len(problems)}); ask for fewer")
        template = TEMPLATES[attempts % len(TEMPLATES)]
        a, b = (str(n) for n in rng.choice(NAMES, size=2, replace=False))
        problem = template(rng, a, b, str(rng.choice(THINGS)))
        problems.setdefault(problem.question, problem)
    return list(problems.values())
