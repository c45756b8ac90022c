"""The hot statements' plans are index probes, whatever the statistics say.

task_claim_batch, task_record_outcomes and order_tasks_apply pin
their plans with `SET enable_* = off` (db/schema.sql says why). Nothing but
a benchmark would notice if a plan changed, so these tests EXPLAIN every
statement inside those functions, as the functions plan them: the statement
text is read from the function's own source (pg_proc.prosrc), its settings
from pg_proc.proconfig, and it is PREPAREd with the function's arguments and
local variables as parameters and EXPLAINed both as a generic plan (what
PL/pgSQL caches after a few calls) and as a custom plan for real arguments.

Every scan of orders or order_tasks (their partitions: order_tasks_open,
the day partitions of finished tasks and of orders, the DEFAULT ones) must be
an index probe on the expected index: never a sequential or bitmap scan, on
tiny freshly ANALYZEd tables (where the planner prefers reading the whole
table) and on a large one.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from tests.conftest import TEMPLATE_DB, _url_for
from tests.helpers import insert_order

HOT_FUNCTIONS = ("task_claim_batch", "task_record_outcomes", "order_tasks_apply")
PLAN_MODES = ("force_generic_plan", "force_custom_plan")
# A scan's relation is a partition: orders_default, orders_p20261202, ...;
# order_tasks_open, order_tasks_finished_p20261202, ...
WATCHED_TABLES = re.compile(r"^(orders|order_tasks)(_.*)?$")
_ORDERS = re.compile(r"^orders(_default|_p\d{8})$")
_ORDERS_BY_ID = re.compile(r"^orders(_default|_p\d{8})_(pkey|id_idx)$")

# The indexes each hot function may read through. The claim walks the queue
# index in order, updates by the open partition's primary key, and reads
# orders by id (a partition's primary key, or its partial index of PENDING
# orders, also on id); the outcome write probes the open partition's primary
# key and never reads its partial index of executing tasks (under an old
# snapshot it holds an entry for every task since); the accounting touches
# orders by id.
ALLOWED_INDEXES: dict[str, dict[str, re.Pattern[str]]] = {
    "task_claim_batch": {
        "order_tasks_open": re.compile(r"^order_tasks_(due_idx|open_pkey)$"),
        "orders": _ORDERS_BY_ID,
    },
    "task_record_outcomes": {"order_tasks_open": re.compile(r"^order_tasks_open_pkey$")},
    "order_tasks_apply": {"orders": _ORDERS_BY_ID},
}
INDEX_SCANS = {"Index Scan", "Index Only Scan"}

_STATEMENT_START = re.compile(
    r"^(RETURN\s+QUERY|PERFORM|WITH|SELECT|UPDATE|INSERT|DELETE)\b", re.IGNORECASE
)
_CONTROL = re.compile(r"^(BEGIN|ELSE|END\s+IF|END\s+LOOP|END|LOOP)\b", re.IGNORECASE)
_CONDITION = re.compile(r"^(IF|ELSIF)\b.*?\bTHEN\b", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class HotStatement:
    """One SQL statement of a PL/pgSQL function, ready to PREPARE."""

    function: str
    number: int
    text: str
    parameters: tuple[str, ...]  # names, in $n order
    parameter_types: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"{self.function}, statement {self.number}"


def split_top_level(body: str) -> list[str]:
    """Split at semicolons outside parentheses and quotes."""
    chunks, depth, quote, current = [], 0, False, []
    for ch in body:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and ch == ";":
            chunks.append("".join(current))
            current = []
            continue
        current.append(ch)
    chunks.append("".join(current))
    return chunks


def strip_control(chunk: str) -> str:
    """Drop the PL/pgSQL control flow that precedes a statement in its chunk."""
    chunk = chunk.strip()
    while True:
        match = _CONTROL.match(chunk) or _CONDITION.match(chunk)
        if match is None:
            return chunk
        chunk = chunk[match.end() :].strip()


def declared_locals(body: str) -> tuple[str, list[tuple[str, str]]]:
    """The body after DECLARE's block, and its variables with their types."""
    head, sep, rest = body.partition("BEGIN")
    if "DECLARE" not in head or not sep:
        return body, []
    declarations = head.split("DECLARE", 1)[1]
    variables = re.findall(r"(\w+)\s+([^;]+);", declarations)
    return sep + rest, [(name, type_.strip()) for name, type_ in variables]


def hot_statements(conn: psycopg.Connection[Any], function: str) -> list[HotStatement]:
    [(source, config, names, modes, types)] = conn.execute(
        """SELECT p.prosrc, p.proconfig, p.proargnames, p.proargmodes,
                  ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)
             FROM pg_proc p WHERE p.proname = %s""",
        (function,),
    ).fetchall()
    inputs = [n for n, m in zip(names, modes or ["i"] * len(names), strict=True) if m == "i"]
    body = re.sub(r"--[^\n]*", "", source)
    body = re.sub(r"^\s*#[^\n]*", "", body, flags=re.MULTILINE)
    body, variables = declared_locals(body)
    parameters = [*inputs, *(name for name, _ in variables)]
    parameter_types = [*types, *(type_ for _, type_ in variables)]
    settings = tuple((name, value) for name, _, value in (c.partition("=") for c in config or []))
    statements = []
    for chunk in split_top_level(body):
        text = strip_control(chunk)
        if not _STATEMENT_START.match(text):
            continue
        text = re.sub(r"^RETURN\s+QUERY\s+", "", text, flags=re.IGNORECASE)
        text = re.sub(r"^PERFORM\b", "SELECT", text, flags=re.IGNORECASE)
        for name, _ in variables:  # SELECT ... INTO a local: the INTO is PL/pgSQL's
            text = re.sub(rf"\bINTO\s+{name}\b", "", text, flags=re.IGNORECASE)
        for number, name in enumerate(parameters, start=1):
            text = re.sub(rf"(?<![\w.$]){name}\b", f"${number}", text)
        statements.append(
            HotStatement(
                function,
                len(statements) + 1,
                text,
                tuple(parameters),
                tuple(parameter_types),
                settings,
            )
        )
    assert statements, f"no statement found in {function}"
    return statements


def explain(
    conn: psycopg.Connection[Any], statement: HotStatement, args: dict[str, str], mode: str
) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) of the statement PREPAREd with the function's
    settings; `args` maps each parameter name to an SQL expression."""
    values = ", ".join(args[name] for name in statement.parameters)
    with conn.transaction():
        for name, value in statement.settings:
            conn.execute(f"SET LOCAL {name} = {value}")
        conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        conn.execute(f"PREPARE hot ({', '.join(statement.parameter_types)}) AS {statement.text}")
        try:
            [(plan,)] = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE hot ({values})").fetchall()
        finally:
            conn.execute("DEALLOCATE hot")
    root: dict[str, Any] = plan[0]["Plan"]
    return root


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def watched_scans(plan: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(table, node type, index) of every scan of orders or order_tasks."""
    return [
        (node["Relation Name"], node["Node Type"], node.get("Index Name"))
        for node in plan_nodes(plan)
        if WATCHED_TABLES.match(node.get("Relation Name") or "")
        and node["Node Type"] != "ModifyTable"
    ]


def empty_partitions(conn: psycopg.Connection[Any]) -> set[str]:
    """Partitions the planner knows to be empty (ANALYZEd, no rows: the days
    ahead, a DEFAULT partition). Any index serves an empty table alike; the
    planner picks among them by a tie, and ANALYZE replans once rows arrive."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_class c
            WHERE c.relkind = 'r' AND c.relispartition AND c.reltuples = 0"""
    ).fetchall()
    return {r[0] for r in rows}


def assert_index_probes_only(
    statement: HotStatement, plan: dict[str, Any], mode: str, empty: set[str]
) -> None:
    allowed = ALLOWED_INDEXES[statement.function]
    scans = watched_scans(plan)
    assert scans, f"{statement} ({mode}) reads neither orders nor order_tasks"
    if statement.function == "task_claim_batch":
        assert ("order_tasks_open", "Index Scan", "order_tasks_due_idx") in scans, (
            f"the claim ({mode}) must walk the queue index in order: {scans}"
        )
    for table, node_type, index in scans:
        pattern = allowed.get("orders" if _ORDERS.match(table) else table)
        probe = node_type in INDEX_SCANS and (
            table in empty or (pattern is not None and bool(pattern.match(index or "")))
        )
        assert probe, (
            f"{statement} ({mode}) reads {table} by {node_type}"
            + (f" on {index}" if index else "")
            + f"; allowed: {allowed}\n{statement.text}"
        )


def literal(conn: psycopg.Connection[Any], value: Any) -> str:
    return pgsql.Literal(value).as_string(conn)


def hot_arguments(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Realistic arguments for every hot function: ten executing tasks (their
    ids and tokens, their completion as accounting changes, their orders)."""
    rows = conn.execute(
        """SELECT id, fencing_token, order_id, quantity FROM order_tasks
            WHERE status = 'EXECUTING' ORDER BY queue_position LIMIT 10"""
    ).fetchall()
    assert rows, "the database needs executing tasks"
    ids = [r[0] for r in rows]
    tokens = [r[1] for r in rows]
    half = len(rows) // 2
    orders = sorted({r[2] for r in rows})
    return {
        # task_claim_batch
        "p_worker_id": literal(conn, "plan-test"),
        "p_limit": "10",
        "p_lease_seconds": "300",
        "p_from_position": "'-Infinity'",
        "p_node_offset": "0",
        # task_record_outcomes
        "p_done_ids": literal(conn, ids[:half]),
        "p_done_tokens": literal(conn, tokens[:half]),
        "p_failed_ids": literal(conn, ids[half:]),
        "p_failed_tokens": literal(conn, tokens[half:]),
        "p_errors": literal(conn, ["boom"] * (len(rows) - half)),
        "p_permanent": literal(conn, [False] * (len(rows) - half)),
        "p_delays": literal(conn, [1.5] * (len(rows) - half)),
        "p_max_attempts": "5",
        # order_tasks_apply: the completion of those tasks
        "p_orders": literal(conn, orders),
        "p_delivered": literal(conn, [400] * len(orders)),
        "p_dead": literal(conn, [0] * len(orders)),
        "p_started": literal(conn, [True] * len(orders)),
        "p_active": literal(conn, [False] * len(orders)),
    }


def assert_hot_plans_are_index_probes(conn: psycopg.Connection[Any]) -> int:
    """Returns how many plans were checked."""
    args = hot_arguments(conn)
    empty = empty_partitions(conn)
    checked = 0
    for function in HOT_FUNCTIONS:
        for statement in hot_statements(conn, function):
            for mode in PLAN_MODES:
                plan = explain(conn, statement, args, mode)
                assert_index_probes_only(statement, plan, mode, empty)
                checked += 1
    return checked


# ---------------------------------------------------------------- tiny tables


@pytest.fixture
def tiny(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A young database: two orders, a few tasks executing, fresh statistics."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for quantity in (4_000, 400):
            insert_order(conn, quantity)
        conn.execute(
            """UPDATE order_tasks SET status = 'EXECUTING', attempts = 1,
                      lease_expires_at = now() + interval '5 minutes',
                      fencing_token = nextval('order_tasks_fencing_token_seq')
                WHERE seq < 3"""
        )
        conn.execute("ANALYZE")
        yield conn


def test_hot_statements_are_index_probes_on_tiny_fresh_statistics(
    tiny: psycopg.Connection[Any],
) -> None:
    checked = assert_hot_plans_are_index_probes(tiny)
    # claim 1, outcomes 1, accounting 2 statements; generic and custom each.
    assert checked == 2 * (1 + 1 + 2)


def test_without_its_settings_a_hot_function_would_scan_whole_tables(
    tiny: psycopg.Connection[Any],
) -> None:
    """The pins are not decoration: on these statistics, the same statements
    planned without the functions' settings read a table whole, which is what
    the tests above would catch if a SET line were removed."""
    args = hot_arguments(tiny)
    for function in HOT_FUNCTIONS:
        scans = []
        for statement in hot_statements(tiny, function):
            unpinned = HotStatement(
                statement.function,
                statement.number,
                statement.text,
                statement.parameters,
                statement.parameter_types,
                (),
            )
            for mode in PLAN_MODES:
                scans += watched_scans(explain(tiny, unpinned, args, mode))
        assert any(node_type not in INDEX_SCANS for _, node_type, _ in scans), (function, scans)


# ---------------------------------------------------------------- a large table

_large_names = itertools.count()


@pytest.fixture(scope="module")
def large(pg_base_url: str, template_url: str) -> Iterator[psycopg.Connection[Any]]:
    """200,000 tasks of 8,000 orders, nearly all delivered, some waiting and
    executing: what a busy database looks like. Built once for the module."""
    name = f"gf_plans_{os.getpid()}_{next(_large_names)}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    url = _url_for(pg_base_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            build_large_queue(conn, orders=8_000, tasks_per_order=25)
            conn.execute("VACUUM ANALYZE")
            yield conn
    finally:
        with psycopg.connect(pg_base_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def build_large_queue(conn: psycopg.Connection[Any], *, orders: int, tasks_per_order: int) -> None:
    with conn.transaction():
        # Seeding only: the counters are set directly instead of by the
        # accounting triggers, which would only slow the set-up down.
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            """INSERT INTO orders (status, quantity, target, backend, task_count, created_at)
               SELECT 'PROCESSING', %(tasks)s * 400, 't', 'simulated', %(tasks)s,
                      now() - make_interval(secs => %(orders)s - g)
               FROM generate_series(1, %(orders)s) AS g""",
            {"orders": orders, "tasks": tasks_per_order},
        )
        conn.execute(
            """INSERT INTO order_tasks (order_id, seq, quantity, status, attempts, queue_position,
                                        executed_at, lease_expires_at, fencing_token, created_at,
                                        backend)
               SELECT o.id, s.seq, 400, st.status,
                      CASE st.status WHEN 'PENDING' THEN 0 ELSE 1 END,
                      extract(epoch FROM o.created_at) + s.seq,
                      CASE WHEN st.status = 'COMPLETED' THEN o.created_at END,
                      CASE WHEN st.status = 'EXECUTING' THEN now() + interval '5 minutes' END,
                      CASE WHEN st.status = 'EXECUTING'
                           THEN nextval('order_tasks_fencing_token_seq') END,
                      o.created_at, 'simulated'
               FROM (SELECT id, created_at, row_number() OVER (ORDER BY created_at) AS n
                       FROM orders) o
               CROSS JOIN generate_series(0, %(tasks)s - 1) AS s (seq)
               CROSS JOIN LATERAL (SELECT CASE
                   WHEN o.n <= %(orders)s * 0.97 THEN 'COMPLETED'
                   WHEN s.seq < 3 THEN 'EXECUTING'
                   WHEN s.seq %% 7 = 0 THEN 'FAILED_RETRYING'
                   ELSE 'PENDING' END AS status) st""",
            {"orders": orders, "tasks": tasks_per_order},
        )
        conn.execute(
            """UPDATE orders o SET delivered = quantity, status = 'COMPLETED'
                WHERE NOT EXISTS (SELECT 1 FROM order_tasks t
                                   WHERE t.order_id = o.id AND t.status <> 'COMPLETED')"""
        )


def test_hot_statements_are_index_probes_on_a_large_queue(
    large: psycopg.Connection[Any],
) -> None:
    [(tasks,)] = large.execute("SELECT count(*) FROM order_tasks").fetchall()
    assert tasks == 200_000
    assert assert_hot_plans_are_index_probes(large) == 2 * (1 + 1 + 2)


def test_the_statements_found_are_the_functions_whole_bodies(
    tiny: psycopg.Connection[Any],
) -> None:
    """The extraction misses nothing: every statement's first words, as the
    functions are written today. A new statement in a hot function shows up
    here and gets its plan checked by the tests above."""
    found = {
        function: [s.text.split(None, 2)[:2] for s in hot_statements(tiny, function)]
        for function in HOT_FUNCTIONS
    }
    assert found == {
        "task_claim_batch": [["WITH", "healthy"]],
        "task_record_outcomes": [["WITH", "completed"]],
        "order_tasks_apply": [["SELECT", "1"], ["UPDATE", "orders"]],
    }
