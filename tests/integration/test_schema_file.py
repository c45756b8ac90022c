"""db/schema.sql is the schema the migrations build.

One database is migrated from empty, another is built from schema.sql; their
`pg_dump --schema-only` (yoyo's own tables left out) and their seed rows must
be equal. A difference fails with a unified diff, so whoever changed one side
sees what the other one lacks.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from goodfellaz17.db.migrate import apply_migrations
from tests.conftest import _url_for

YOYO_TABLES = ("_yoyo_log", "_yoyo_migration", "_yoyo_version", "yoyo_lock")
_names = itertools.count()


def _pg_dump_path() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "pg_dump"


def schema_sql() -> str:
    return resources.files("goodfellaz17.db").joinpath("schema.sql").read_text(encoding="utf-8")


@pytest.fixture
def empty_db(pg_base_url: str) -> Iterator[Callable[[], str]]:
    """A factory of empty databases (their URLs), dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        name = f"gf_schema_{os.getpid()}_{next(_names)}"
        with psycopg.connect(pg_base_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        names.append(name)
        return _url_for(pg_base_url, name)

    yield make
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def schema_dump(url: str) -> str:
    """pg_dump --schema-only without yoyo's tables. Nothing else is normalised:
    both databases live on the same server, so even the header lines agree."""
    excluded = [f"--exclude-table=public.{t}" for t in YOYO_TABLES]
    result = subprocess.run(
        [str(_pg_dump_path()), "--schema-only", *excluded, f"--dbname={url}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def seed_rows(url: str) -> dict[str, Any]:
    """Every row of every table (timestamps that hold the moment of seeding
    left out) and every sequence's position, by name."""
    seeds: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            """SELECT c.relname,
                      COALESCE(array_agg(a.attname) FILTER (
                          WHERE a.atttypid = 'timestamptz'::regtype), '{}') AS moments
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                                    AND NOT a.attisdropped
                WHERE c.relkind = 'r' AND NOT c.relname = ANY (%s)
                GROUP BY c.relname ORDER BY c.relname""",
            (list(YOYO_TABLES),),
        ).fetchall()
        for table, moments in tables:
            rows = conn.execute(
                f"SELECT to_jsonb(t) - %s::text[] FROM {table} t ORDER BY 1::text",
                (moments,),
            ).fetchall()
            seeds[f"table {table}"] = [r[0] for r in rows]
        sequences = conn.execute(
            """SELECT sequencename, last_value FROM pg_sequences
                WHERE schemaname = 'public' ORDER BY sequencename"""
        ).fetchall()
        for name, last_value in sequences:
            seeds[f"sequence {name}"] = last_value
    return seeds


def unified_diff(migrated: str, from_file: str, what: str) -> str:
    return "".join(
        difflib.unified_diff(
            migrated.splitlines(keepends=True),
            from_file.splitlines(keepends=True),
            fromfile=f"migrations/ ({what})",
            tofile=f"schema.sql ({what})",
        )
    )


def test_schema_file_builds_the_schema_the_migrations_build(
    empty_db: Callable[[], str],
) -> None:
    migrated_url, from_file_url = empty_db(), empty_db()
    apply_migrations(migrated_url)
    with psycopg.connect(from_file_url, autocommit=True) as conn:
        conn.execute(schema_sql())

    migrated, from_file = schema_dump(migrated_url), schema_dump(from_file_url)
    assert "CREATE TABLE public.order_tasks" in migrated
    assert "_yoyo" not in migrated
    diff = unified_diff(migrated, from_file, "pg_dump --schema-only")
    if diff:
        pytest.fail("db/schema.sql and the migrations disagree:\n" + diff, pytrace=False)

    migrated_seeds, file_seeds = seed_rows(migrated_url), seed_rows(from_file_url)
    assert migrated_seeds["table chaos_settings"], "the migrations seed chaos_settings"
    seed_diff = unified_diff(
        json.dumps(migrated_seeds, indent=1, sort_keys=True),
        json.dumps(file_seeds, indent=1, sort_keys=True),
        "seed rows",
    )
    if seed_diff:
        pytest.fail("the seed rows disagree:\n" + seed_diff, pytrace=False)
