"""Storage-layout probes for the queue's storage redesign (issue 13): the
SQL cycle alone, on three layouts, with and without a large history.

Each cycle, driven by pgbench (4 clients, `-M prepared`), claims a batch of
due tasks with FOR UPDATE SKIP LOCKED, completes them fenced by their tokens
and adds their units to the orders through a statement-level trigger with
transition tables, as the product does. The layouts (bench/pgbench/layouts):

- `plain`: one table for open and finished tasks (today's shape);
- `listpart`: one table partitioned by LIST on status, an open partition with
  the claim indexes and a finished partition RANGE-partitioned by day; the
  completing UPDATE moves rows across (row movement);
- `history`: an open table, and a completion that deletes the rows and
  inserts them into a history table partitioned by day, in one statement.

Each runs with an empty history and with `layout_history` (5 M) finished
tasks already present, at 10, 100 and 500 tasks per statement; cells run
interleaved round by round. Every run starts from the same line: the open
work is reloaded (as many PENDING tasks as the run completes), the previous
run's finished rows are removed, the tables vacuumed and analyzed, and the
server checkpointed. Each run is checked afterwards: every task completed
once and every unit counted on its order.

Before measuring, the probe checks on the server itself that rows moved
between partitions by an UPDATE appear in the statement trigger's OLD and
NEW transition tables, which the listpart layout's accounting relies on.

Uses its own database on the benchmark's server (several GB with the
history) and drops it afterwards. Not a test; measures, asserts only that
each run did what it claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from bench.config import BenchConfig
from bench.pg import BenchServer, PostgresCpu
from bench.procs import clean_env
from bench.queue_cycle import run_pgbench

LAYOUT_DB = "bench_layouts"
SQL_DIR = Path(__file__).parent / "pgbench" / "layouts"
INDEXES_MARK = "-- @indexes"
TASKS_PER_ORDER = 38
TASK_UNITS = 395
# A claim whose SKIP LOCKED scan meets a row that a concurrent completion
# has just moved to another partition fails with a serialization failure
# (SQLSTATE 40001: "tuple to be locked was already moved to another partition
# due to concurrent update") instead of skipping it; a worker would claim
# again. pgbench does the same (the claim is the cycle's first statement, so
# nothing of the cycle was committed), and the retries are reported.
MAX_TRIES = 100


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    complete_script: str
    history_target: str  # the table the finished history is loaded into
    open_table: str  # the structure every claim and completion touches
    finished_parent: str | None  # the partitioned table of finished rows
    finished_rows: str  # FROM ... WHERE selecting finished tasks


LAYOUTS = (
    Layout(
        "plain",
        "one table (today's shape)",
        "complete_update.sql",
        "tasks",
        "tasks",
        None,
        "tasks WHERE status = 'COMPLETED'",
    ),
    Layout(
        "listpart",
        "LIST by status, row movement, finished by day",
        "complete_update.sql",
        "tasks",
        "tasks_open",
        "tasks_finished",
        "tasks_finished WHERE true",
    ),
    Layout(
        "history",
        "delete on finish into a history by day",
        "complete_delete.sql",
        "tasks_history",
        "tasks",
        "tasks_history",
        "tasks_history WHERE true",
    ),
)


@dataclass(frozen=True)
class Cell:
    """One layout with one history size, in its own schema."""

    layout: Layout
    history: int  # finished tasks present before every run (whole orders)
    loaded_on: date  # finished rows of runs land in partitions from this day on

    @property
    def schema(self) -> str:
        return f"{self.layout.name}_{'history' if self.history else 'empty'}"

    @property
    def history_orders(self) -> int:
        return self.history // TASKS_PER_ORDER


def whole_orders(tasks: int) -> int:
    return -(-tasks // TASKS_PER_ORDER) * TASKS_PER_ORDER


def _ddl(layout: str) -> tuple[str, str]:
    """A layout's tables, then (after the history is loaded) its indexes,
    constraints and triggers."""
    text = (SQL_DIR / f"{layout}.sql").read_text()
    tables, _, rest = text.partition(INDEXES_MARK)
    return tables, rest.partition("\n")[2]  # the marker's line is a comment


def _use(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(f"SET search_path TO {schema}")


# ---------------------------------------------------------------- the check

_CAPTURE = """
CREATE TABLE seen (old_rows bigint, new_rows bigint, old_ids bigint[], new_ids bigint[]);
CREATE FUNCTION capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen
    SELECT (SELECT count(*) FROM old_rows), (SELECT count(*) FROM new_rows),
           (SELECT array_agg(id ORDER BY id) FROM old_rows),
           (SELECT array_agg(id ORDER BY id) FROM new_rows);
    RETURN NULL;
END;
$$;
CREATE TRIGGER capture AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION capture();
"""


def check_moved_rows_in_transition_tables(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Build the listpart layout in a scratch schema inside a transaction
    that is rolled back, move three tasks of one order from the open to the
    finished partition with one UPDATE, and return what the statement
    trigger saw. Raises when the moved rows are missing from either
    transition table or their units did not reach the order."""
    tables, indexes = _ddl("listpart")
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE SCHEMA layout_check")
        _use(conn, "layout_check")
        conn.execute((SQL_DIR / "common.sql").read_text())
        conn.execute(tables)
        conn.execute(indexes)
        conn.execute(_CAPTURE)
        conn.execute("INSERT INTO orders (id, quantity) VALUES (1, 2000)")
        conn.execute(
            "INSERT INTO tasks (id, order_id, quantity, position) "
            "SELECT g, 1, 400, g FROM generate_series(1, 5) g"
        )
        conn.execute("UPDATE tasks SET status = 'EXECUTING' WHERE id <= 4")
        conn.execute("TRUNCATE seen")
        moved = conn.execute(
            "UPDATE tasks SET status = 'COMPLETED', finished_at = now() "
            "WHERE id IN (1, 2, 3) AND status = 'EXECUTING'"
        ).rowcount
        seen = conn.execute("SELECT old_rows, new_rows, old_ids, new_ids FROM seen").fetchone()
        where = conn.execute("SELECT count(*) FROM tasks_finished WHERE id IN (1, 2, 3)").fetchone()
        delivered = conn.execute("SELECT delivered FROM orders WHERE id = 1").fetchone()
        version = conn.execute("SHOW server_version").fetchone()
    assert seen is not None
    assert where is not None
    assert delivered is not None
    assert version is not None
    result = {
        "server_version": str(version[0]),
        "moved_rows": moved,
        "rows_in_finished_partition": int(where[0]),
        "old_table_rows": int(seen[0]),
        "new_table_rows": int(seen[1]),
        "old_table_ids": list(seen[2] or []),
        "new_table_ids": list(seen[3] or []),
        "units_added_to_order": int(delivered[0]),
    }
    expected = {
        "moved_rows": 3,
        "rows_in_finished_partition": 3,
        "old_table_rows": 3,
        "new_table_rows": 3,
        "old_table_ids": [1, 2, 3],
        "new_table_ids": [1, 2, 3],
        "units_added_to_order": 1200,
    }
    wrong = {k: (result[k], v) for k, v in expected.items() if result[k] != v}
    if wrong:
        raise RuntimeError(f"transition tables do not carry moved rows: {wrong}")
    return result


# ---------------------------------------------------------------- building

_LOAD_HISTORY_ORDERS = """
INSERT INTO orders (id, status, quantity, delivered, updated_at, completed_at)
SELECT g, 'COMPLETED', %(units)s, %(units)s, now() - interval '1 day', now() - interval '1 day'
FROM generate_series(1, %(orders)s::bigint) g
"""

# Finished between 30 and 1 days ago, evenly: every day partition but the
# current ones gets its share; the runs' rows land in today's partition.
_LOAD_HISTORY_TASKS = """
INSERT INTO {target} (id, order_id, quantity, status, position, attempts, fencing_token,
                      started_at, finished_at, created_at)
SELECT g, (g - 1) / {per_order} + 1, {units}, 'COMPLETED', g, 1, g, t, t, t
FROM generate_series(1, %(tasks)s::bigint) g,
     LATERAL (SELECT (current_date - 30)::timestamptz
                     + (g - 1) * (interval '29 days' / %(tasks)s) AS t) AS f
"""


def build_cell(conn: psycopg.Connection[Any], layout: Layout, history: int) -> Cell:
    """The layout in its own schema, its history loaded before its indexes
    are built, vacuumed and analyzed."""
    cell = Cell(layout, history, date.today())
    tables, indexes = _ddl(layout.name)
    conn.execute(f"DROP SCHEMA IF EXISTS {cell.schema} CASCADE")
    conn.execute(f"CREATE SCHEMA {cell.schema}")
    _use(conn, cell.schema)
    conn.execute((SQL_DIR / "common.sql").read_text())
    conn.execute(tables)
    if history:
        conn.execute(
            _LOAD_HISTORY_ORDERS,
            {"orders": cell.history_orders, "units": TASKS_PER_ORDER * TASK_UNITS},
        )
        conn.execute(
            _LOAD_HISTORY_TASKS.format(
                target=layout.history_target, per_order=TASKS_PER_ORDER, units=TASK_UNITS
            ),
            {"tasks": history},
        )
    conn.execute("SET maintenance_work_mem = '256MB'")
    conn.execute(indexes)
    conn.execute("RESET maintenance_work_mem")
    conn.execute("VACUUM ANALYZE")
    return cell


def _current_partitions(conn: psycopg.Connection[Any], cell: Cell) -> list[str]:
    """The day partitions that only runs write to (from the load's day on)."""
    parent = cell.layout.finished_parent
    if parent is None:
        return []
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        (f"{cell.schema}.{parent}",),
    ).fetchall()
    first = f"{parent}_{cell.loaded_on:%Y%m%d}"
    return sorted(str(r[0]) for r in rows if str(r[0]) >= first)


_LOAD_PENDING_ORDERS = """
INSERT INTO orders (id, quantity)
SELECT g, %(units)s FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""

_LOAD_PENDING_TASKS = """
INSERT INTO tasks (id, order_id, quantity, position, created_at)
SELECT g, (g - 1) / %(per_order)s + 1, %(units)s, g, now()
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""


def reset_cell(conn: psycopg.Connection[Any], cell: Cell, pending: int) -> None:
    """Back to the starting line: only the history, then `pending` PENDING
    tasks (whole orders) after it; vacuumed, analyzed, checkpointed."""
    _use(conn, cell.schema)
    layout = cell.layout
    current = _current_partitions(conn, cell)
    if current:
        conn.execute("TRUNCATE " + ", ".join(current))
    if layout.name == "plain" and cell.history:
        # History and open work share the table: delete what runs added.
        conn.execute("DELETE FROM tasks WHERE id > %s", (cell.history,))
        conn.execute("DELETE FROM orders WHERE id > %s", (cell.history_orders,))
    else:
        conn.execute(f"TRUNCATE {layout.open_table}")
        conn.execute("DELETE FROM orders WHERE id > %s", (cell.history_orders,))
    orders = pending // TASKS_PER_ORDER
    conn.execute(
        _LOAD_PENDING_ORDERS,
        {
            "units": TASKS_PER_ORDER * TASK_UNITS,
            "first": cell.history_orders + 1,
            "last": cell.history_orders + orders,
        },
    )
    conn.execute(
        _LOAD_PENDING_TASKS,
        {
            "per_order": TASKS_PER_ORDER,
            "units": TASK_UNITS,
            "first": cell.history + 1,
            "last": cell.history + orders * TASKS_PER_ORDER,
        },
    )
    vacuum = ["orders", layout.open_table, *current]
    if layout.name == "plain":
        vacuum = ["orders", "tasks"]
    conn.execute("VACUUM ANALYZE " + ", ".join(vacuum))
    conn.execute("CHECKPOINT")


# ---------------------------------------------------------------- one run


def _script(cell: Cell, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"layout_{cell.layout.name}_cycle.sql"
    path.write_text(
        f"-- Generated by bench/layouts.py from bench/pgbench/layouts: {cell.layout.name}.\n"
        + (SQL_DIR / "claim.sql").read_text()
        + (SQL_DIR / cell.layout.complete_script).read_text()
    )
    return path


def sizes(conn: psycopg.Connection[Any], cell: Cell) -> dict[str, Any]:
    """Bytes of the open structure (heap, each index) and of the finished
    rows kept elsewhere, with the open structure's rows (counted) and dead
    row versions (as the statistics count them, which lag a little)."""
    _use(conn, cell.schema)
    open_rel = f"{cell.schema}.{cell.layout.open_table}"
    row = conn.execute(
        "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)",
        (open_rel, open_rel),
    ).fetchone()
    assert row is not None
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
        "WHERE indrelid = %s::regclass ORDER BY 1",
        (open_rel,),
    ).fetchall()
    live = conn.execute(f"SELECT count(*) FROM {open_rel}").fetchone()
    dead = conn.execute(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass", (open_rel,)
    ).fetchone()
    finished = 0
    if cell.layout.finished_parent:
        total = conn.execute(
            "SELECT COALESCE(sum(pg_table_size(relid) + pg_indexes_size(relid)), 0) "
            "FROM pg_partition_tree(%s::regclass) WHERE isleaf",
            (f"{cell.schema}.{cell.layout.finished_parent}",),
        ).fetchone()
        assert total is not None
        finished = int(total[0])
    return {
        "open_table_bytes": int(row[0]),
        "open_indexes_bytes": int(row[1]),
        "open_index_bytes": {str(name): int(size) for name, size in indexes},
        "open_live_rows": int(live[0]) if live else None,
        "open_dead_rows": int(dead[0]) if dead else None,  # the statistics' count
        "finished_elsewhere_bytes": finished,
    }


def run_cell(
    cfg: BenchConfig,
    server: BenchServer,
    conn: psycopg.Connection[Any],
    cpu: PostgresCpu,
    cell: Cell,
    batch: int,
    dbname: str = LAYOUT_DB,
) -> dict[str, Any]:
    clients = cfg.layout_clients
    cycles = max(1, cfg.layout_tasks // (batch * clients))
    needed = cycles * clients * batch
    reset_cell(conn, cell, whole_orders(needed))
    run = run_pgbench(
        server,
        cpu,
        conn,
        dbname,
        _script(cell, cfg.out_dir),
        clients=clients,
        cycles=cycles,
        defines={"limit": str(batch)},
        timeout=cfg.run_timeout,
        env=clean_env({"PGOPTIONS": f"-c search_path={cell.schema}"}),
        max_tries=MAX_TRIES,
    )
    _use(conn, cell.schema)
    done = conn.execute(
        f"SELECT count(*) FROM {cell.layout.finished_rows} AND id > %s", (cell.history,)
    ).fetchone()
    units = conn.execute(
        "SELECT COALESCE(sum(delivered), 0) FROM orders WHERE id > %s", (cell.history_orders,)
    ).fetchone()
    assert done is not None
    assert units is not None
    if run.failed or int(done[0]) != needed or int(units[0]) != needed * TASK_UNITS:
        raise RuntimeError(
            f"layout {cell.schema} batch {batch}: {run.failed} failed cycles, {done[0]} of "
            f"{needed} tasks finished, {units[0]} of {needed * TASK_UNITS} units on the orders; "
            f"{run.errors}"
        )
    return {
        "layout": cell.layout.name,
        "history": cell.history,
        "batch": batch,
        "clients": clients,
        "tasks": needed,
        "seconds": run.seconds,
        "tasks_per_s": needed / run.seconds,
        "pg_cpu_ms_per_task": run.pg_cpu_s / needed * 1000,
        "pg_cores": run.pg_cpu_s / run.wall_seconds,
        "retried_cycles": run.retried,
        "retry_errors": list(run.errors),
        "sizes": sizes(conn, cell),
    }


# ---------------------------------------------------------------- the section


def run_layouts(
    cfg: BenchConfig, server: BenchServer, cpu: PostgresCpu, say: Callable[[str], None]
) -> dict[str, Any]:
    history = whole_orders(cfg.layout_history)
    url = server.recreate_database(LAYOUT_DB)
    results: dict[str, Any] = {
        "history_tasks": history,
        "clients": cfg.layout_clients,
        "tasks_per_run": cfg.layout_tasks,
        "batches": list(cfg.layout_batches),
        "layouts": {layout.name: layout.title for layout in LAYOUTS},
        "runs": [],
    }
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            results["transition_tables"] = check_moved_rows_in_transition_tables(conn)
            say("  transition tables carry rows moved between partitions: checked")
            cells = []
            for size in (0, history):
                for layout in LAYOUTS:
                    started = time.monotonic()
                    cells.append(build_cell(conn, layout, size))
                    say(
                        f"  built {cells[-1].schema} ({size:,} finished tasks) in "
                        f"{time.monotonic() - started:.0f}s"
                    )
            for r in range(cfg.layout_rounds):
                for batch in cfg.layout_batches:
                    for cell in cells:
                        run = run_cell(cfg, server, conn, cpu, cell, batch)
                        run["round"] = r
                        results["runs"].append(run)
                        say(
                            f"  round {r + 1} {cell.schema} batch {batch}: "
                            f"{run['tasks_per_s']:,.0f} tasks/s, "
                            f"PG {run['pg_cpu_ms_per_task']:.3f} ms/task"
                        )
    finally:
        server.drop_database(LAYOUT_DB)
    return results
