"""The repository speaks the queries' language: one method per named query,
called by the query's name, so `grep order_create` finds both."""

from __future__ import annotations

import inspect

from goodfellaz17.db.queries import load_queries
from goodfellaz17.db.repository import Repository

# Plumbing, not queries.
NOT_QUERIES = {"connection", "transaction"}


def _public_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(Repository, inspect.isfunction)
        if not name.startswith("_") and name not in NOT_QUERIES
    }


def test_every_repository_method_is_named_after_its_query() -> None:
    queries = set(load_queries())
    assert _public_methods() - queries == set()


def test_every_named_query_has_its_repository_method() -> None:
    queries = set(load_queries())
    assert queries - _public_methods() == set()
