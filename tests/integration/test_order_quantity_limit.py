"""GOODFELLAZ17_MAX_ORDER_QUANTITY is a maximum, not a bound one short of it:
exactly the maximum is accepted, one unit more is refused naming the field."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from goodfellaz17.settings import Settings
from tests.conftest import ORDERS_KEY, READ_KEY, key_headers, make_settings
from tests.helpers import order_row

MAXIMUM = 1_200  # small: the accepted order is three tasks


@pytest.fixture
def settings(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The maximum set the operator's way, through its variable (the `api`
    fixture builds its app from these settings)."""
    monkeypatch.setenv("GOODFELLAZ17_MAX_ORDER_QUANTITY", str(MAXIMUM))
    return make_settings(db_url)


def order_count(sql: psycopg.Connection[Any]) -> int:
    row = sql.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0])


async def test_an_order_of_exactly_the_maximum_is_accepted_and_one_more_is_refused(
    api: Any, sql: psycopg.Connection[Any], settings: Settings
) -> None:
    assert settings.max_order_quantity == MAXIMUM

    over = await api.post(
        "/api/orders",
        headers=key_headers(ORDERS_KEY),
        json={"quantity": MAXIMUM + 1, "target": "acct-over"},
    )
    assert over.status_code == 422, over.text
    assert over.json()["field"] == "quantity"
    assert str(MAXIMUM) in over.json()["message"]
    assert order_count(sql) == 0

    exact = await api.post(
        "/api/orders",
        headers=key_headers(ORDERS_KEY),
        json={"quantity": MAXIMUM, "target": "acct-exact"},
    )
    assert exact.status_code == 201, exact.text
    assert exact.json()["quantity"] == MAXIMUM
    assert order_row(sql, exact.json()["id"])["quantity"] == MAXIMUM
    assert order_count(sql) == 1


async def test_capacity_answers_for_exactly_the_maximum_and_refuses_one_more(api: Any) -> None:
    exact = await api.get(
        "/api/admin/capacity", params={"quantity": MAXIMUM}, headers=key_headers(READ_KEY)
    )
    assert exact.status_code == 200, exact.text
    over = await api.get(
        "/api/admin/capacity", params={"quantity": MAXIMUM + 1}, headers=key_headers(READ_KEY)
    )
    assert over.status_code == 422, over.text
    assert over.json()["field"] == "quantity"
