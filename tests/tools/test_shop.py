"""The ShopBot database: the same seed gives the same rows; the SQL tool only reads, within limits."""

from __future__ import annotations

import pytest

from rlenv.tools.shop import database_digest, make_shop_database, run_sql


@pytest.fixture()
def shop(tmp_path):
    return make_shop_database(tmp_path / "shop.db", seed=3)


def test_same_seed_same_database_other_seed_other(tmp_path, shop):
    again = make_shop_database(tmp_path / "again.db", seed=3)
    other = make_shop_database(tmp_path / "other.db", seed=4)
    assert database_digest(shop) == database_digest(again) != database_digest(other)


def test_select_answers_with_rows_and_a_row_limit(shop):
    result = run_sql(shop, "SELECT id, name FROM customers ORDER BY id", max_rows=5)
    assert result.ok and result.columns == ("id", "name") and len(result.rows) == 5 and result.truncated
    joined = run_sql(
        shop,
        "SELECT o.id, SUM(l.quantity * i.price_cents) FROM orders o JOIN order_lines l ON l.order_id = o.id "
        "JOIN items i ON i.id = l.item_id WHERE o.id = 1 GROUP BY o.id",
    )
    assert joined.ok and joined.rows[0][0] == 1 and joined.rows[0][1] > 0
    assert "id | name" in result.as_text() and "more rows" in result.as_text()


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM customers",
        "UPDATE items SET price_cents = 0",
        "INSERT INTO items VALUES (99, 'x', 1)",
        "DROP TABLE orders",
        "CREATE TABLE evil (x)",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "PRAGMA writable_schema = ON",
    ],
)
def test_writes_and_escapes_are_refused_and_change_nothing(shop, query):
    before = database_digest(shop)
    result = run_sql(shop, query)
    assert not result.ok and result.error
    assert database_digest(shop) == before


def test_runaway_query_and_several_statements_are_stopped(shop):
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    assert "limit" in run_sql(shop, endless, seconds=0.2).error
    assert run_sql(shop, "SELECT 1; DELETE FROM customers").error == "only one statement at a time"
    assert run_sql(shop, "SELEC nonsense").error.startswith("near")
    assert "empty query" in run_sql(shop, "  ").error
