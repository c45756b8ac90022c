"""`python -m bench`: every section on one embedded PostgreSQL, one table.

Order of work: the throughput sections (pgbench, Procrastinate, the Node
peers graphile-worker and pg-boss, the engine) run interleaved, round after
round, so each round compares the systems within a minute of each other;
then pick-up latency, the API, the open transaction case, the profile, the
1,000,000-task database (its own database, dropped afterwards), and, only
when asked for (`--layouts`), the storage-layout probes. A section that
fails is reported as such and the others still run; the exit code is then 1.

Progress goes to stderr; the table to stdout; everything measured, with
the configuration, server settings and machine load, to bench/results.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import api, engine, layouts, node_peers, peer, profile, queue_cycle, report, scale
from bench.config import BenchConfig, parse_args
from bench.pg import PRODUCT_DB, BenchServer, PostgresCpu, check_durability, create_product_database

THROUGHPUT_SECTIONS = {"pgbench", "peer", "graphile", "pgboss", "engine"}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class MachineLoad:
    """How busy the machine was with processes other than ours (the bench,
    its children and PostgreSQL): on a shared machine, the caveat that goes
    with every figure."""

    def __init__(self, pg: PostgresCpu) -> None:
        self.pg = pg
        self.me = psutil.Process()

    def _sample(self) -> tuple[float, float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq
        mine = self.me.cpu_times()
        ours = mine.user + mine.system + mine.children_user + mine.children_system
        for child in self.me.children(recursive=True):
            try:
                ct = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            ours += ct.user + ct.system
        return time.monotonic(), busy, ours, getattr(t, "steal", 0.0)

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
        w0, b0, o0, s0 = self._sample()
        p0 = self.pg.snapshot()
        value = fn()
        w1, b1, o1, s1 = self._sample()
        p1 = self.pg.snapshot()
        wall = max(w1 - w0, 1e-9)
        ours = (o1 - o0) + PostgresCpu.seconds_between(p0, p1)
        load = {
            "wall_s": wall,
            "busy_cores": (b1 - b0) / wall,
            "our_cores": ours / wall,
            "other_cores": max((b1 - b0) - ours, 0.0) / wall,
            "steal_cores": (s1 - s0) / wall,
        }
        return value, load


def _section(results: dict[str, Any], name: str, load: MachineLoad, fn: Callable[[], Any]) -> Any:
    say(f"{name} ...")
    try:
        value, machine = load.measure(fn)
    except Exception as exc:
        say(f"{name} FAILED: {exc}")
        results.setdefault("errors", {})[name] = "".join(traceback.format_exception(exc))[-4000:]
        return None
    results.setdefault("machine_load", {})[name] = machine
    say(
        f"{name} done in {machine['wall_s']:.0f}s "
        f"(other processes on the machine: {machine['other_cores']:.2f} cores)"
    )
    return value


def _throughput_round(
    cfg: BenchConfig,
    server: BenchServer,
    admin: psycopg.Connection[Any],
    url: str,
    peer_admin: psycopg.Connection[Any] | None,
    peer_url: str | None,
    cpu: PostgresCpu,
    r: int,
) -> dict[str, Any]:
    rd: dict[str, Any] = {"round": r}
    if cfg.runs("pgbench"):
        rd["pgbench"] = []
        for variant in cfg.pgbench_variants:
            for clients in cfg.pgbench_clients:
                run = queue_cycle.run_once(cfg, server, admin, PRODUCT_DB, variant, clients, cpu)
                say(
                    f"  pgbench {variant} c={clients} {run['tasks']:,} tasks: "
                    f"{run['tasks_per_s']:,.0f} tasks/s"
                )
                rd["pgbench"].append(run)
        product = [r for r in rd["pgbench"] if r["variant"] == "product"]
        if cfg.pgbench_large and cfg.engine_large_tasks and product:
            best = max(product, key=lambda r: r["tasks_per_s"])["clients"]
            run = queue_cycle.run_once(
                cfg,
                server,
                admin,
                PRODUCT_DB,
                "product",
                best,
                cpu,
                tasks=cfg.engine_large_tasks,
                queue="large",
            )
            rate = run["tasks_per_s"]
            say(f"  pgbench product c={best} {run['tasks']:,} tasks: {rate:,.0f} tasks/s")
            rd["pgbench"].append(run)
        for batch in cfg.compare_batches:
            run = queue_cycle.run_once(
                cfg,
                server,
                admin,
                PRODUCT_DB,
                "minimal",
                cfg.compare_clients,
                cpu,
                tasks=cfg.large_tasks,
                queue="compare",
                batch=batch,
            )
            say(
                f"  pgbench minimal c={cfg.compare_clients} batch {batch} {run['tasks']:,} tasks: "
                f"{run['tasks_per_s']:,.0f} tasks/s"
            )
            rd["pgbench"].append(run)
    if cfg.runs("peer") and peer_admin is not None and peer_url is not None:
        run = peer.run_peer(cfg, server, peer_admin, peer_url, cpu, f"r{r}")
        say(f"  Procrastinate: {run['jobs_per_s']:,.0f} jobs/s")
        rd["peer"] = run
    for node_peer in node_peers.NODE_PEERS:
        if not cfg.runs(node_peer.section):
            continue
        try:  # a peer that fails leaves the rest of the round standing
            run = node_peers.run_node_peer(cfg, server, node_peer, cpu, f"r{r}")
        except Exception as exc:
            say(f"  {node_peer.label} FAILED: {exc}")
            rd.setdefault("errors", {})[node_peer.section] = "".join(
                traceback.format_exception(exc)
            )[-4000:]
            continue
        say(f"  {node_peer.label}: {_rate(run)} jobs (busy)")
        rd[node_peer.section] = run
    if cfg.runs("engine"):
        rd["engine"] = []
        sizes = [cfg.engine_orders]
        if cfg.engine_large_tasks:
            sizes.append(engine.engine_orders_for(cfg, cfg.engine_large_tasks))
        for orders in sizes:
            for procs in cfg.engine_processes:
                run = engine.run_engine(
                    cfg,
                    server,
                    admin,
                    url,
                    orders=orders,
                    processes=procs,
                    cpu=cpu,
                    tag=f"r{r}-{orders}x{procs}",
                )
                say(
                    f"  engine {run['tasks']:,} tasks x{procs}: {run['tasks_per_s']:,.0f} tasks/s, "
                    f"busy {_rate(run)}, "
                    f"worker {run['worker_cores']:.2f} / PG {run['pg_cores']:.2f} cores"
                )
                rd["engine"].append(run)
    return rd


def _rate(run: dict[str, Any]) -> str:
    rate = run.get("busy_items_per_s")
    return "n/a" if rate is None else f"{rate:,.0f}/s"


def _drop_missing_node_peers(cfg: BenchConfig, results: dict[str, Any]) -> BenchConfig:
    """The Node peers need `npm ci` in bench/peers (done by `make bench`);
    without it they are reported as failed and the rest still runs."""
    wanted = [p.section for p in node_peers.NODE_PEERS if cfg.runs(p.section)]
    reason = node_peers.missing_install() if wanted else None
    if reason is None:
        return cfg
    for section in wanted:
        results.setdefault("errors", {})[section] = reason
    say(f"{', '.join(wanted)} skipped: {reason}")
    return replace(cfg, only=tuple(s for s in cfg.only if s not in wanted))


def _open_txn(
    cfg: BenchConfig, server: BenchServer, admin: psycopg.Connection[Any], url: str
) -> dict[str, Any]:
    clean = engine.run_open_txn_condition(cfg, server, admin, url, held=False)
    say(f"  clean: {[round(w['tasks_per_s']) for w in clean['windows']]} tasks/s")
    held = engine.run_open_txn_condition(cfg, server, admin, url, held=True)
    say(f"  held:  {[round(w['tasks_per_s']) for w in held['windows']]} tasks/s")
    return {"clean": clean, "held": held}


def _profile(
    cfg: BenchConfig,
    server: BenchServer,
    admin: psycopg.Connection[Any],
    url: str,
    cpu: PostgresCpu,
) -> dict[str, Any]:
    orders = engine.engine_orders_for(cfg, cfg.profile_tasks)
    raw = cfg.out_dir / "profile-raw.txt"
    spec = engine.ProfileSpec(raw, "raw", rate=cfg.profile_rate)
    run = engine.run_engine(
        cfg,
        server,
        admin,
        url,
        orders=orders,
        processes=1,
        cpu=cpu,
        tag="profile-raw",
        profile=spec,
    )
    summary = profile.summarise(
        raw, run["seconds"], cfg.profile_rate, cpu_share=run["worker_cores"]
    )
    svg = engine.ProfileSpec(cfg.profile_svg, "flamegraph", rate=cfg.profile_rate)
    svg_run = engine.run_engine(
        cfg, server, admin, url, orders=orders, processes=1, cpu=cpu, tag="profile-svg", profile=svg
    )
    (cfg.out_dir / "profile-summary.txt").write_text(profile.render(summary) + "\n")
    return {
        "run": run,
        "svg_run": svg_run,
        "summary": summary,
        "raw": str(raw),
        "svg": str(cfg.profile_svg),
    }


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    errors: dict[str, Any] = {}
    cfg = _drop_missing_node_peers(cfg, {"errors": errors})
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "small_tasks": cfg.small_tasks,
            "large_tasks": cfg.large_tasks,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        **({"errors": errors} if errors else {}),
    }
    server = BenchServer(cfg.data_dir, keep=cfg.keep)
    say(f"starting PostgreSQL in {server.root}")
    server.start()
    try:
        settings = server.settings()
        check_durability(settings)
        results["server"] = settings
        cpu = PostgresCpu(server.postmaster_pid())
        load = MachineLoad(cpu)
        url = create_product_database(server)
        peer_url = peer.create_peer_database(server) if cfg.runs("peer") else None
        with psycopg.connect(url, autocommit=True) as admin:
            peer_admin = psycopg.connect(peer_url, autocommit=True) if peer_url else None
            try:
                rounds = []
                if THROUGHPUT_SECTIONS & set(cfg.only):
                    for r in range(cfg.rounds):
                        rd = _section(
                            results,
                            f"round {r + 1}/{cfg.rounds}",
                            load,
                            lambda r=r: _throughput_round(
                                cfg, server, admin, url, peer_admin, peer_url, cpu, r
                            ),
                        )
                        if rd is not None:
                            rounds.append(rd)
                            for name, error in rd.pop("errors", {}).items():
                                results.setdefault("errors", {})[f"{name} (round {r + 1})"] = error
                results["rounds"] = rounds
            finally:
                if peer_admin is not None:
                    peer_admin.close()
            if cfg.runs("pickup"):
                results["pickup"] = _section(
                    results,
                    "pick-up latency",
                    load,
                    lambda: api.run_pickup(cfg, server, admin, url),
                )
            if cfg.runs("api"):
                results["api"] = _section(
                    results,
                    "POST /api/orders",
                    load,
                    lambda: api.run_api(cfg, server, admin, url, cpu),
                )
            if cfg.runs("open_txn"):
                results["open_txn"] = _section(
                    results,
                    "open transaction",
                    load,
                    lambda: _open_txn(cfg, server, admin, url),
                )
            if cfg.runs("profile"):
                results["profile"] = _section(
                    results, "profile", load, lambda: _profile(cfg, server, admin, url, cpu)
                )
        if cfg.runs("scale"):
            results["scale"] = _section(
                results, f"{cfg.scale_tasks:,} tasks", load, lambda: scale.run_scale(cfg, server)
            )
        if cfg.runs("layouts"):
            results["layouts"] = _section(
                results, "storage layouts", load, lambda: layouts.run_layouts(cfg, server, cpu, say)
            )
    finally:
        server.stop()

    results["elapsed_s"] = time.monotonic() - started
    rows = report.build_rows(results)
    results["table"] = [row.as_dict() for row in rows]
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    other = [m["other_cores"] for m in results.get("machine_load", {}).values()]
    title = (
        f"goodfellaz17 benchmarks: {cfg.rounds} runs per figure, PostgreSQL "
        f"{settings['server_version']} (fsync={settings['fsync']}, "
        f"synchronous_commit={settings['synchronous_commit']}), "
        f"{os.cpu_count()} cores; other processes used up to "
        f"{max(other, default=0.0):.2f} cores; {results['elapsed_s'] / 60:.1f} min"
    )
    report.render(rows, title)
    if results.get("layouts"):
        report.render_layouts(results["layouts"])
    if results.get("profile"):
        print(profile.render(results["profile"]["summary"]))
    print(f"results: {cfg.out}")
    print(f"total time: {results['elapsed_s'] / 60:.1f} min")
    for name in results.get("errors", {}):
        print(f"FAILED section: {name} (traceback in {cfg.out})")
    return 1 if results.get("errors") else 0
