"""The benchmark harness at toy size: its pieces parse, run and measure.

Not a benchmark (`make bench` is): this checks that the pgbench scripts
still match the product's SQL and schema, that an engine run drains the
queue it loaded and reports sane figures, and that the report turns raw
results into the right pass/fail marks. Runs on the test server (fsync
off), so no figure here means anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bench import engine, layouts, node_peers, profile, queue_cycle, report
from bench.config import BenchConfig, parse_args
from bench.pg import BenchServer, PostgresCpu
from bench.stats import Summary, percentile
from rich.console import Console

pytestmark = pytest.mark.e2e


@pytest.fixture
def tiny(tmp_path: Path) -> BenchConfig:
    cfg = parse_args(["--quick"])
    return dataclasses.replace(cfg, pgbench_tasks=60, out_dir=tmp_path / "out", run_timeout=60.0)


@pytest.fixture
def bench_server(pg_server: Any) -> BenchServer:
    return BenchServer.attach(pg_server)


def _dbname(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[1]


@pytest.mark.parametrize(("variant", "clients"), [("product", 1), ("minimal", 2)])
def test_pgbench_cycle_completes_every_claimed_task_with_accounting(
    tiny: BenchConfig, bench_server: BenchServer, db_url: str, variant: str, clients: int
) -> None:
    cpu = PostgresCpu(bench_server.postmaster_pid())
    with psycopg.connect(db_url, autocommit=True) as admin:
        run = queue_cycle.run_once(
            tiny, bench_server, admin, _dbname(db_url), variant, clients, cpu
        )
        delivered, completed_units = admin.execute(
            "SELECT (SELECT sum(delivered) FROM orders), "
            "(SELECT sum(quantity) FROM order_tasks WHERE status = 'COMPLETED')"
        ).fetchone()
    assert run["tasks"] == 60
    assert run["tasks_per_s"] > 0
    assert delivered == completed_units > 0  # the accounting triggers ran


def test_product_script_refuses_a_parameter_it_cannot_fill() -> None:
    with pytest.raises(queue_cycle.ScriptError, match="surprise"):
        queue_cycle.to_pgbench(
            "SELECT %(limit)s, %(surprise)s", queue_cycle.CLAIM_PARAMS, "task_claim_batch"
        )
    script = queue_cycle.product_script()
    assert "%(" not in script
    assert ":limit" in script
    assert "\\gset" in script


def test_engine_run_drains_what_it_queued_and_measures_the_worker(
    tiny: BenchConfig, bench_server: BenchServer, db_url: str
) -> None:
    cpu = PostgresCpu(bench_server.postmaster_pid())
    with psycopg.connect(db_url, autocommit=True) as admin:
        run = engine.run_engine(
            tiny, bench_server, admin, db_url, orders=2, processes=1, cpu=cpu, tag="smoke"
        )
        leftover = admin.execute(
            "SELECT count(*) FROM order_tasks WHERE status <> 'COMPLETED'"
        ).fetchone()
    assert run["tasks"] == 76
    assert run["units"] == 30_000
    assert run["attempts"] == 76  # each task claimed once
    assert leftover == (0,)
    assert run["tasks_per_s"] > 0
    assert 10 < run["worker_peak_rss_mb"] < 1000
    assert run["worker_cpu_s_per_1k"] >= 0
    # The busy window opens at the first completion: inside the run's window.
    assert 0 < run["busy_items"] <= 76
    assert run["busy_seconds"] <= run["seconds"]


NODE_MISSING = node_peers.missing_install()


@pytest.mark.skipif(NODE_MISSING is not None, reason=f"Node peers not installed: {NODE_MISSING}")
@pytest.mark.parametrize("peer", node_peers.NODE_PEERS, ids=lambda p: p.section)
def test_node_peer_drains_the_jobs_queued_before_it_started(
    tiny: BenchConfig, bench_server: BenchServer, peer: node_peers.NodePeer
) -> None:
    cfg = dataclasses.replace(tiny, node_jobs=300)
    cpu = PostgresCpu(bench_server.postmaster_pid())
    try:
        run = node_peers.run_node_peer(cfg, bench_server, peer, cpu, "smoke")
    finally:
        bench_server.drop_database(peer.database)
    assert run["jobs"] == 300  # and every one succeeded, or run_node_peer raises
    assert run["version"] == peer.version()
    assert 0 <= run["busy_items"] < 300  # the window opens at the first completion


def test_an_update_moving_rows_between_partitions_fills_both_transition_tables(
    db_url: str,
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        seen = layouts.check_moved_rows_in_transition_tables(conn)
        leftover = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'layout_check'"
        ).fetchone()
    assert seen["old_table_ids"] == seen["new_table_ids"] == [1, 2, 3]
    assert seen["units_added_to_order"] == 1200
    assert leftover == (0,)  # built and rolled back


@pytest.mark.parametrize("layout", layouts.LAYOUTS, ids=lambda layout: layout.name)
def test_layout_cycle_finishes_every_task_once_and_counts_its_units(
    tiny: BenchConfig, bench_server: BenchServer, db_url: str, layout: layouts.Layout
) -> None:
    cfg = dataclasses.replace(tiny, layout_clients=2, layout_tasks=80)
    cpu = PostgresCpu(bench_server.postmaster_pid())
    with psycopg.connect(db_url, autocommit=True) as conn:
        cell = layouts.build_cell(conn, layout, history=76)
        first = layouts.run_cell(cfg, bench_server, conn, cpu, cell, 10, _dbname(db_url))
        again = layouts.run_cell(cfg, bench_server, conn, cpu, cell, 20, _dbname(db_url))
        history = conn.execute(
            f"SELECT count(*) FROM {layout.finished_rows} AND id <= 76"
        ).fetchone()
    # 2 clients x 4 cycles x 10, then 2 x 2 x 20; the run checks each task
    # finished once and every unit reached its order, or raises.
    assert (first["tasks"], again["tasks"]) == (80, 80)
    assert history == (76,)  # the reset between runs keeps the history
    # Each run queues whole orders of 38 tasks: 114 for 80, 34 left PENDING.
    sizes = again["sizes"]
    if layout.name == "plain":
        assert sizes["open_live_rows"] == 76 + 114  # history and open work share the table
    else:
        assert sizes["open_live_rows"] == 34  # finished work left the open structure
        assert sizes["finished_elsewhere_bytes"] > 0


def _round(pg: float, peer: float, eng_small: float, eng_large: float) -> dict[str, Any]:
    return {
        "pgbench": [
            _pgbench("small", 1, 152, pg / 2),
            _pgbench("small", 4, 152, pg),
            _pgbench("large", 4, 418, pg),
        ],
        "peer": {
            "jobs": 152,
            "processes": 4,
            "concurrency": 10,
            "jobs_per_s": peer,
            "worker_cpu_s_per_1k": 4.0,
            "pg_cpu_s_per_1k": 2.0,
        },
        "engine": [
            _engine(152, eng_small),
            _engine(418, eng_large),
        ],
    }


def _pgbench(queue: str, clients: int, tasks: int, rate: float) -> dict[str, Any]:
    return {
        "variant": "product",
        "queue": queue,
        "clients": clients,
        "tasks": tasks,
        "tasks_per_s": rate,
        "pg_cpu_s_per_1k": 0.3,
    }


def _engine(tasks: int, rate: float) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "processes": 1,
        "tasks_per_s": rate,
        "units_per_s": rate * 400,
        "worker_cpu_s_per_1k": 0.5,
        "pg_cpu_s_per_1k": 0.9,
        "worker_cores": 0.3,
        "pg_cores": 0.5,
        "worker_peak_rss_mb": 60.0,
    }


def test_report_compares_systems_round_by_round_and_marks_targets() -> None:
    results = {
        "config": {
            "batch": 10,
            "small_tasks": 152,
            "pgbench_variants": ["product"],
            "pgbench_clients": [1, 4],
            "engine_processes": [1],
            "open_txn_run_tasks": 300,
            "open_txn_hold_seconds": 3.0,
        },
        # ratios engine(418) / pgbench(418): 0.4, 0.6, 0.7 -> median 0.6 (pass)
        # ratios engine(152) / pgbench(152) best: 0.4, 0.6, 1.0 -> median 0.6 (pass)
        # ratios engine(152) / peer: 8, 12, 20 -> median 12 (pass)
        "rounds": [
            _round(pg=1000, peer=50, eng_small=400, eng_large=400),
            _round(pg=1000, peer=50, eng_small=600, eng_large=600),
            _round(pg=1000, peer=50, eng_small=1000, eng_large=700),
        ],
        "open_txn": {
            "clean": {
                "windows": [{"tasks_per_s": 100}, {"tasks_per_s": 100}, {"tasks_per_s": 100}]
            },
            "held": {
                "windows": [{"tasks_per_s": 90}, {"tasks_per_s": 60}, {"tasks_per_s": 40}],
                "dead_tuples": {"orders": 10, "order_tasks": 20},
            },
        },
    }
    rows = {r.figure: r for r in report.build_rows(results)}
    limit = rows["engine / pgbench limit, 418-task queue"]
    assert limit.summary is not None
    assert (limit.summary.median, limit.summary.min, limit.summary.max) == (0.6, 0.4, 0.7)
    assert limit.passed is True
    small = rows["engine / pgbench limit, 152-task queue"]
    assert small.summary is not None
    assert (small.summary.median, small.summary.max) == (0.6, 1.0)
    peer = rows["engine / Procrastinate"]
    assert peer.summary is not None
    assert peer.summary.median == 12
    assert peer.passed is True
    held = rows["open transaction / clean"]
    assert held.summary is not None
    assert held.summary.min == 0.4
    assert held.passed is False  # one run fell under half the clean rate

    console = Console(record=True, width=200)
    report.render(list(rows.values()), "smoke", console)
    text = console.export_text()
    assert "PASS" in text
    assert "FAIL" in text


def _busy(rate: float) -> dict[str, Any]:
    return {
        "busy_items_per_s": rate,
        "busy_worker_cpu_ms": 0.1,
        "busy_pg_cpu_ms": 0.2,
        "busy_worker_cores": 0.3,
        "busy_pg_cores": 0.4,
    }


def test_same_run_comparison_takes_the_best_engine_run_against_each_peer_per_round() -> None:
    def rnd(graphile: float, pgboss: float, one: float, two: float) -> dict[str, Any]:
        peer = {"label": "graphile-worker", "version": "0.18.0", "settings": "s"}
        return {
            "graphile": {**peer, **_busy(graphile)},
            "pgboss": {**peer, "label": "pg-boss", **_busy(pgboss)},
            "engine": [
                {**_engine(1900, one), "processes": 1, **_busy(one)},
                {**_engine(1900, two), "processes": 2, **_busy(two)},
            ],
        }

    results = {
        "config": {
            "batch": 10,
            "small_tasks": 152,
            "large_tasks": 1900,
            "compare_batches": [10],
            "pgbench_variants": ["product"],
            "pgbench_clients": [1],
            "engine_processes": [1, 2],
        },
        # best engine / graphile per round: 1000/4000, 3000/2000, 1500/1000 -> 0.25, 1.5, 1.5
        "rounds": [
            rnd(graphile=4000, pgboss=500, one=1000, two=900),
            rnd(graphile=2000, pgboss=500, one=1000, two=3000),
            rnd(graphile=1000, pgboss=500, one=1500, two=100),
        ],
    }
    rows = {r.figure: r for r in report.build_rows(results)}
    ratio = rows["goodfellaz17 / graphile-worker"]
    assert ratio.summary is not None
    assert (ratio.summary.min, ratio.summary.median, ratio.summary.max) == (0.25, 1.5, 1.5)
    assert ratio.passed is True
    assert rows["goodfellaz17 / pg-boss"].summary.median == 3.0  # type: ignore[union-attr]
    pg_cpu = [
        r
        for r in report.build_rows(results)
        if r.figure == "  PostgreSQL CPU" and r.unit == "ms/item"
    ]
    # graphile-worker, pg-boss (no target), then the engine's 0.2 ms > 0.1 ms
    assert [r.passed for r in pg_cpu] == [None, None, False, False]


def test_layout_rows_compare_each_layout_with_plain_in_the_same_round() -> None:
    def run(layout: str, rnd: int, rate: float) -> dict[str, Any]:
        return {
            "layout": layout,
            "history": 0,
            "batch": 10,
            "round": rnd,
            "tasks": 1000,
            "tasks_per_s": rate,
            "pg_cpu_ms_per_task": 0.1,
            "retried_cycles": 2 if layout == "history" else 0,
        }

    rows = report.layout_rows(
        {
            "batches": [10],
            "layouts": {"plain": "", "history": ""},
            "runs": [
                run("plain", 0, 100),
                run("history", 0, 150),
                run("plain", 1, 400),
                run("history", 1, 200),
                run("plain", 2, 100),
                run("history", 2, 300),
            ],
        }
    )
    history = next(r for r in rows if r["layout"] == "history")
    assert history["tasks_per_s"].median == 200
    assert (history["vs_plain"].min, history["vs_plain"].median) == (0.5, 1.5)
    assert (history["retried"], history["cycles"]) == (6, 300)


def test_profile_summary_separates_waiting_from_python(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "<module> (goodfellaz17:6);run (asyncio/runners.py:190);"
        "EpollSelector.select (selectors.py:468) 70\n"
        "<module> (goodfellaz17:6);OrderDeliveryWorker._claim (goodfellaz17/worker/worker.py:300);"
        "BaseCursor._send_query_prepared (psycopg/_cursor_base.py:602) 30\n"
    )
    summary = profile.summarise(raw, window_seconds=1.0, rate=100)
    assert summary["active_samples"] == 30
    assert summary["python_share"] == pytest.approx(0.3)
    assert summary["by_library"][0]["name"] == "psycopg"
    assert summary["engine_inclusive"][0]["name"] == "OrderDeliveryWorker._claim"
    assert "30% in Python" in profile.render(summary)


def test_summary_and_percentile() -> None:
    s = Summary.of([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.runs) == (2.0, 1.0, 3.0, 3)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile(list(range(101)), 99) == 99.0
