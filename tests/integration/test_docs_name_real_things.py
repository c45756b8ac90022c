"""Every identifier README.md and docs/*.md name in backticks exists: as a
named query, in a migrated database's catalog (a function or its argument, a
table, view, column, index, trigger, constraint, type or setting), as a metric
of a live scrape, in the package or tests/, in deploy/, or as a name the docs
define themselves. What counts as an identifier is in tests/doc_names.py; the names
that need no database are checked by tests/unit/test_architecture_doc.py.

A failure lists every offending `doc:line: name`. Fix the doc (or the code),
never the rules."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from goodfellaz17.db.repository import Repository
from tests import doc_names
from tests.observability import scraped_names

# Every name in the catalog, the system's included (`pg_terminate_backend`,
# `max_connections`): the docs send operators to both.
CATALOG_NAMES = """
SELECT proname FROM pg_proc
UNION SELECT unnest(proargnames) FROM pg_proc
UNION SELECT relname FROM pg_class
UNION SELECT attname FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped
UNION SELECT tgname FROM pg_trigger
UNION SELECT conname FROM pg_constraint
UNION SELECT typname FROM pg_type
UNION SELECT name FROM pg_settings
"""
TABLE_COLUMNS = """
SELECT c.relname || '.' || a.attname
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
"""
SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
WHERE_NAMES_LIVE = (
    "not a named query, a database object or setting, an exported metric, a name of"
    " the package or of tests/, a key in deploy/, nor a name the docs define"
)


@pytest.fixture
async def metric_names(api: Any, repo: Repository) -> set[str]:
    """Sample names as scraped, and the metric names they are made of."""
    samples = await scraped_names(api, repo)
    return samples | {name.removesuffix(suffix) for name in samples for suffix in SAMPLE_SUFFIXES}


def rows(sql: psycopg.Connection[Any], query: str) -> set[str]:
    return {row[0] for row in sql.execute(query)}


async def test_every_identifier_in_the_docs_exists(
    sql: psycopg.Connection[Any], metric_names: set[str]
) -> None:
    known = rows(sql, CATALOG_NAMES) | metric_names | doc_names.known_without_database()
    named = [n for n in doc_names.names() if n.kind == "name"]
    assert len(named) > 100, "the docs name the schema and the code: is the extraction broken?"
    problems = [f"{n}: {WHERE_NAMES_LIVE}" for n in named if n.value not in known]
    assert not problems, "names in the docs that do not exist:\n" + "\n".join(problems)


async def test_every_dotted_name_in_the_docs_is_a_column_or_an_attribute(
    sql: psycopg.Connection[Any],
) -> None:
    columns = rows(sql, TABLE_COLUMNS)
    dotted = [n for n in doc_names.names() if n.kind == "dotted"]
    assert dotted, "the docs name columns as table.column: is the extraction broken?"
    problems = [
        f"{n}: neither a table's column nor a module's attribute"
        for n in dotted
        if n.value not in columns and not doc_names.attribute_exists(n.value)
    ]
    assert not problems, "names in the docs that do not exist:\n" + "\n".join(problems)
