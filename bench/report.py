"""One table from the raw results, with the issue's targets as pass/fail.

Comparisons are ratios computed round by round (each round measures every
system back to back on the same server), then summarised like any figure:
median of the rounds, with min and max. A slow minute on a shared machine
then lowers both sides of a ratio instead of one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench.stats import Summary


@dataclass
class Row:
    figure: str
    summary: Summary | None
    unit: str
    detail: str = ""
    target: str = ""
    passed: bool | None = None
    fmt: str = ",.0f"
    heading: bool = False

    def cells(self) -> list[str]:
        def f(v: float) -> str:
            return format(v, self.fmt)

        s = self.summary
        ok = "" if self.passed is None else ("PASS" if self.passed else "FAIL")
        if self.heading:
            return [self.figure, "", "", "", "", self.detail, "", ""]
        if s is None:
            return [self.figure, "n/a", "", "", self.unit, self.detail, self.target, ok]
        return [
            self.figure,
            f(s.median),
            f(s.min),
            f(s.max),
            self.unit,
            self.detail,
            self.target,
            ok,
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "unit": self.unit,
            "detail": self.detail,
            "target": self.target,
            "passed": self.passed,
            **({"summary": self.summary.as_dict()} if self.summary else {"summary": None}),
        }


def _summary(values: Sequence[float | None]) -> Summary | None:
    clean = [v for v in values if v is not None]
    return Summary.of(clean) if clean else None


def _pick(runs: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in runs if all(r.get(k) == v for k, v in match.items())]


def _per_round(
    rounds: Sequence[dict[str, Any]], fn: Callable[[dict[str, Any]], float | None]
) -> Summary | None:
    values = []
    for rd in rounds:
        try:
            values.append(fn(rd))
        except (KeyError, ValueError, ZeroDivisionError, TypeError):
            continue
    return _summary(values)


def _best(runs: Sequence[dict[str, Any]], key: str) -> float:
    if not runs:
        raise ValueError("no runs")
    return max(float(r[key]) for r in runs)


class Rows(list[Row]):
    def add(
        self,
        figure: str,
        values: Sequence[float | None] | Summary | None,
        unit: str,
        detail: str = "",
        target: str = "",
        check: Callable[[Summary], bool] | None = None,
        fmt: str = ",.0f",
    ) -> None:
        s = values if isinstance(values, Summary) or values is None else _summary(values)
        passed = check(s) if check is not None and s is not None else None
        self.append(Row(figure, s, unit, detail, target, passed, fmt))

    def heading(self, figure: str, detail: str = "") -> None:
        self.append(Row(figure, None, "", detail, heading=True))


def build_rows(results: dict[str, Any]) -> list[Row]:
    rows = Rows()
    _comparison_rows(rows, results)
    _throughput_rows(rows, results)
    _latency_rows(rows, results)
    _scale_rows(rows, results)
    _open_txn_rows(rows, results)
    return list(rows)


def _throughput_rows(rows: Rows, results: dict[str, Any]) -> None:
    cfg = results["config"]
    rounds: list[dict[str, Any]] = results.get("rounds", [])
    batch = cfg["batch"]

    pg_runs = [r for rd in rounds for r in rd.get("pgbench", [])]
    for variant in cfg["pgbench_variants"]:
        for c in cfg["pgbench_clients"]:
            runs = _pick(pg_runs, variant=variant, clients=c, queue="small")
            if not runs:
                continue
            cpu = statistics.median(r["pg_cpu_s_per_1k"] for r in runs)
            plural = "s" if c > 1 else ""
            rows.add(
                f"pgbench {variant} SQL, {c} client{plural}, {runs[0]['tasks']:,} tasks",
                [r["tasks_per_s"] for r in runs],
                "tasks/s",
                f"batch {batch}; PG CPU {cpu:.2f} s/1k tasks",
            )
    large_pg = _pick(pg_runs, queue="large")
    if large_pg:
        cpu = statistics.median(r["pg_cpu_s_per_1k"] for r in large_pg)
        clients = ",".join(str(r["clients"]) for r in large_pg)
        rows.add(
            f"pgbench product SQL, {large_pg[0]['tasks']:,} tasks",
            [r["tasks_per_s"] for r in large_pg],
            "tasks/s",
            f"clients {clients} (each round's best); PG CPU {cpu:.2f} s/1k tasks",
        )

    peer_runs = [rd["peer"] for rd in rounds if "peer" in rd]
    if peer_runs:
        p = peer_runs[0]
        wcpu = statistics.median(r["worker_cpu_s_per_1k"] for r in peer_runs)
        pcpu = statistics.median(r["pg_cpu_s_per_1k"] for r in peer_runs)
        rows.add(
            f"Procrastinate, {p['jobs']:,} no-op jobs",
            [r["jobs_per_s"] for r in peer_runs],
            "jobs/s",
            f"{p['processes']} proc x concurrency {p['concurrency']}; "
            f"CPU s/1k jobs: worker {wcpu:.2f}, PG {pcpu:.2f}",
        )

    eng_runs = [r for rd in rounds for r in rd.get("engine", [])]
    sizes = sorted({r["tasks"] for r in eng_runs})
    for tasks in sizes:
        for procs in cfg["engine_processes"]:
            runs = _pick(eng_runs, tasks=tasks, processes=procs)
            if not runs:
                continue
            claim = statistics.median(r.get("avg_claim_batch", 0.0) for r in runs)
            complete = statistics.median(r.get("avg_complete_batch", 0.0) for r in runs)
            rows.add(
                f"engine {tasks:,} tasks, {procs} worker{'s' if procs > 1 else ''}",
                [r["tasks_per_s"] for r in runs],
                "tasks/s",
                f"batch {batch}; tasks per claim {claim:.1f}, per completion {complete:.1f}",
            )
            rows.add("  units delivered", [r["units_per_s"] for r in runs], "units/s")
            rows.add(
                "  worker CPU",
                [r["worker_cpu_s_per_1k"] for r in runs],
                "s/1k tasks",
                _cores(runs, "worker_cores"),
                fmt=".2f",
            )
            rows.add(
                "  PostgreSQL CPU",
                [r["pg_cpu_s_per_1k"] for r in runs],
                "s/1k tasks",
                _cores(runs, "pg_cores"),
                fmt=".2f",
            )
            rows.add(
                "  worker peak RSS",
                [r["worker_peak_rss_mb"] for r in runs],
                "MB",
                "per process (VmHWM); pass: every run",
                "< 150 MB",
                lambda s: s.max < 150,
                fmt=".1f",
            )
    if not eng_runs:
        return

    large = max(sizes)
    small = cfg["small_tasks"]

    def engine_best(rd: dict[str, Any], tasks: int) -> float:
        return _best(_pick(rd.get("engine", []), tasks=tasks), "tasks_per_s")

    def pgbench_best(rd: dict[str, Any], variant: str, queue: str) -> float:
        return _best(_pick(rd["pgbench"], variant=variant, queue=queue), "tasks_per_s")

    variants = cfg["pgbench_variants"]
    if pg_runs:
        ref = "product" if "product" in variants else variants[0]
        for tasks, queue in ((small, "small"), (large, "large")):
            if not _pick(pg_runs, variant=ref, queue=queue) or tasks not in sizes:
                continue
            rows.add(
                f"engine / pgbench limit, {tasks:,}-task queue",
                _per_round(
                    rounds,
                    lambda rd, t=tasks, q=queue: engine_best(rd, t) / pgbench_best(rd, ref, q),
                ),
                "x",
                f"best engine run / best pgbench run ({ref} SQL), per round",
                ">= 0.50",
                lambda s: s.median >= 0.5,
                fmt=".2f",
            )
        if "minimal" in variants and ref != "minimal":
            rows.add(
                f"engine / pgbench minimal SQL, {small:,}-task queue",
                _per_round(
                    rounds, lambda rd: engine_best(rd, small) / pgbench_best(rd, "minimal", "small")
                ),
                "x",
                "information: the bare SKIP LOCKED cycle",
                fmt=".2f",
            )
    if peer_runs:
        rows.add(
            "engine / Procrastinate",
            _per_round(rounds, lambda rd: engine_best(rd, small) / rd["peer"]["jobs_per_s"]),
            "x",
            f"same {small:,} jobs; best engine run",
            ">= 10",
            lambda s: s.median >= 10,
            fmt=".1f",
        )


# The issue-13 targets for the engine in the same-run comparison.
ENGINE_PG_CPU_MS = 0.1
ENGINE_WORKER_CPU_MS = 0.15


def _busy_rows(
    rows: Rows,
    figure: str,
    runs: Sequence[dict[str, Any]],
    detail: str,
    targets: tuple[float, float] | None = None,
) -> None:
    """A contestant's busy rate, then its worker and PostgreSQL CPU per item
    (with the engine's targets when given)."""
    rows.add(figure, [r.get("busy_items_per_s") for r in runs], "items/s", detail)
    worker_target, pg_target = targets or (None, None)
    for label, key, target in (
        ("  worker CPU", "busy_worker_cpu_ms", worker_target),
        ("  PostgreSQL CPU", "busy_pg_cpu_ms", pg_target),
    ):
        values = [r.get(key) for r in runs]
        if all(v is None for v in values):
            continue
        cores = [r.get(key.replace("_cpu_ms", "_cores")) for r in runs]
        clean = [c for c in cores if c is not None]
        busy = f"{statistics.median(clean):.2f} cores busy" if clean else ""
        rows.add(
            label,
            values,
            "ms/item",
            busy,
            f"<= {target:g} ms" if target is not None else "",
            (lambda s, t=target: s.median <= t) if target is not None else None,
            fmt=".3f",
        )


def _comparison_rows(rows: Rows, results: dict[str, Any]) -> None:
    """Issue 13's same-run table: every queue draining the same number of
    no-op items on the same server in the same rounds, busy rate after the
    first completion, CPU per item; then the engine's ratios, round by round."""
    cfg = results["config"]
    rounds: list[dict[str, Any]] = results.get("rounds", [])
    large = cfg.get("large_tasks")
    eng = [r for rd in rounds for r in rd.get("engine", []) if r["tasks"] == large]
    peers = {
        name: [rd[name] for rd in rounds if name in rd] for name in ("graphile", "pgboss", "peer")
    }
    raw = [r for rd in rounds for r in rd.get("pgbench", []) if r.get("queue") == "compare"]
    if not (eng or raw or peers["graphile"] or peers["pgboss"]):
        return
    rows.heading(
        f"same-run comparison, {large:,} no-op items each",
        "busy rate: from the first completion to the last, database clock",
    )
    for name in ("graphile", "pgboss"):
        runs = peers[name]
        if runs:
            first = runs[0]
            _busy_rows(rows, f"{first['label']} {first['version']}", runs, first["settings"])
    for batch in cfg.get("compare_batches", []):
        runs = _pick(raw, batch=batch)
        if not runs:
            continue
        rows.add(
            f"raw SQL cycle, {batch} per statement",
            [r["tasks_per_s"] for r in runs],
            "items/s",
            f"pgbench minimal script, {runs[0]['clients']} clients, {runs[0]['tasks']:,} tasks",
        )
        rows.add("  PostgreSQL CPU", [r["pg_cpu_s_per_1k"] for r in runs], "ms/item", fmt=".3f")
    for procs in cfg["engine_processes"]:
        runs = _pick(eng, processes=procs)
        if runs:
            _busy_rows(
                rows,
                f"goodfellaz17, {procs} worker process{'es' if procs > 1 else ''}",
                runs,
                f"instant simulated backend, batch {cfg['batch']}",
                (ENGINE_WORKER_CPU_MS, ENGINE_PG_CPU_MS),
            )
    if peers["peer"]:
        p = peers["peer"][0]
        _busy_rows(
            rows,
            f"Procrastinate {p.get('version', '')}".strip(),
            peers["peer"],
            f"{p['processes']} proc x concurrency {p['concurrency']}; {p['jobs']:,} jobs",
        )

    def engine_best(rd: dict[str, Any]) -> float:
        return _best(
            [r for r in _pick(rd.get("engine", []), tasks=large) if r.get("busy_items_per_s")],
            "busy_items_per_s",
        )

    for name, label in (("graphile", "graphile-worker"), ("pgboss", "pg-boss")):
        if not (eng and peers[name]):
            continue
        goal = name == "graphile"
        rows.add(
            f"goodfellaz17 / {label}",
            _per_round(rounds, lambda rd, n=name: engine_best(rd) / rd[n]["busy_items_per_s"]),
            "x",
            "best engine run (1 or 2 processes) / the peer, per round"
            + ("; interim floor 0.5" if goal else ""),
            ">= 1" if goal else "",
            (lambda s: s.median >= 1.0) if goal else None,
            fmt=".2f",
        )
    if eng and raw:
        ref = min(cfg.get("compare_batches", [cfg["batch"]]))
        rows.add(
            f"goodfellaz17 / raw SQL cycle ({ref} per statement)",
            _per_round(
                rounds,
                lambda rd: (
                    engine_best(rd)
                    / _best(_pick(rd["pgbench"], queue="compare", batch=ref), "tasks_per_s")
                ),
            ),
            "x",
            "information: the engine against the bare claim + complete cycle",
            fmt=".2f",
        )


def _latency_rows(rows: Rows, results: dict[str, Any]) -> None:
    api = results.get("api") or []
    if api:
        rows.add(
            "POST /api/orders latency, median",
            [r["latency_median_ms"] for r in api],
            "ms",
            f"15,000 units, 1 client, {api[0]['sequential']} requests",
            fmt=".1f",
        )
        rows.add(
            "POST /api/orders latency, p99",
            [r["latency_p99_ms"] for r in api],
            "ms",
            "15,000 units, 1 client",
            fmt=".1f",
        )
        p99 = statistics.median(r["concurrent_latency_p99_ms"] for r in api)
        cpu = ""
        if "server_cpu_ms_per_order" in api[0]:
            server = statistics.median(r["server_cpu_ms_per_order"] for r in api)
            pg = statistics.median(r["pg_cpu_ms_per_order"] for r in api)
            cpu = f"; CPU ms/order: API {server:.1f}, PG {pg:.1f}"
        rows.add(
            f"POST /api/orders, {api[0]['clients']} concurrent clients",
            [r["orders_per_s"] for r in api],
            "orders/s",
            f"{api[0]['concurrent']} requests; latency p99 {p99:.0f} ms{cpu}",
        )
    pickup = results.get("pickup") or []
    if pickup:
        wake = statistics.median(r["claim_start_median_ms"] for r in pickup)
        rows.add(
            "pick-up latency, median",
            [r["median_ms"] for r in pickup],
            "ms",
            f"COMMIT -> first task EXECUTING; the claim starts at {wake:.1f} ms",
            fmt=".1f",
        )
        wake99 = statistics.median(r["claim_start_p99_ms"] for r in pickup)
        rows.add(
            "pick-up latency, p99",
            [r["p99_ms"] for r in pickup],
            "ms",
            f"{pickup[0]['samples']} orders per run, 10 s poll; claim starts p99 {wake99:.1f} ms",
            "< 50 ms",
            lambda s: s.median < 50,
            fmt=".1f",
        )


def _scale_rows(rows: Rows, results: dict[str, Any]) -> None:
    scale = results.get("scale") or {}
    if "invariants" in scale:
        inv = scale["invariants"]
        via = "HTTP" if inv["via"].startswith("GET") else "service call (no endpoint yet)"
        rows.add(
            f"invariants/all at {scale['tasks']:,} tasks",
            inv["seconds"],
            "s",
            f"{via}; passed={inv['passed']}, {inv['orders_checked']:,} orders",
            "< 1 s",
            lambda s: s.median < 1.0,
            fmt=".3f",
        )
    if "metrics" in scale:
        met = scale["metrics"]
        times = [t * 1000 for t in met["seconds"]]
        rows.add(
            f"/metrics scrape at {scale['tasks']:,} tasks",
            times or None,
            "ms",
            f"{met.get('bytes', 0):,} bytes" if times else met["via"],
            "< 100 ms",
            lambda s: s.median < 100,
            fmt=".1f",
        )


def _open_txn_rows(rows: Rows, results: dict[str, Any]) -> None:
    cfg = results["config"]
    optx = results.get("open_txn") or {}
    if "clean" not in optx or "held" not in optx:
        return
    clean, held = optx["clean"]["windows"], optx["held"]["windows"]
    window = cfg["open_txn_hold_seconds"] / max(len(clean), 1)
    rows.add(
        "engine, clean",
        [r["tasks_per_s"] for r in clean],
        "tasks/s",
        f"1 worker, queue topped up; {len(clean)} windows of {window:.0f} s",
    )
    dead = optx["held"].get("dead_tuples", {})
    rows.add(
        f"engine, {cfg['open_txn_hold_seconds']:.0f} s open transaction elsewhere",
        [r["tasks_per_s"] for r in held],
        "tasks/s",
        f"dead rows at the end: {sum(dead.values()):,}",
    )
    rows.add(
        "open transaction / clean",
        [h["tasks_per_s"] / c["tasks_per_s"] for h, c in zip(held, clean, strict=False)],
        "x",
        "window i held vs window i clean; pass: every window",
        ">= 0.50",
        lambda s: s.min >= 0.5,
        fmt=".2f",
    )


def _cores(runs: Sequence[dict[str, Any]], key: str) -> str:
    return f"{statistics.median(r[key] for r in runs):.2f} cores busy"


def render(rows: Sequence[Row], title: str, console: Console | None = None) -> None:
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for name, justify in (
        ("figure", "left"),
        ("median", "right"),
        ("min", "right"),
        ("max", "right"),
        ("unit", "left"),
        ("detail", "left"),
        ("target", "left"),
        ("", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row.cells())
    (console or Console(width=180)).print(table)


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.1f}"


def layout_rows(layouts: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (history, batch, layout): medians over the rounds, and the
    layout's rate against the plain layout's in the same round."""
    runs: list[dict[str, Any]] = layouts.get("runs", [])
    rows = []
    for history in sorted({r["history"] for r in runs}):
        for batch in layouts["batches"]:
            for name in layouts["layouts"]:
                cell = _pick(runs, history=history, batch=batch, layout=name)
                if not cell:
                    continue
                ratios = []
                for run in cell:
                    plain = _pick(
                        runs, history=history, batch=batch, layout="plain", round=run["round"]
                    )
                    if plain:
                        ratios.append(run["tasks_per_s"] / plain[0]["tasks_per_s"])
                rows.append(
                    {
                        "history": history,
                        "batch": batch,
                        "layout": name,
                        "tasks_per_s": Summary.of([r["tasks_per_s"] for r in cell]),
                        "pg_cpu_ms": Summary.of([r["pg_cpu_ms_per_task"] for r in cell]),
                        "vs_plain": Summary.of(ratios) if ratios else None,
                        "retried": sum(r.get("retried_cycles", 0) for r in cell),
                        "cycles": sum(r["tasks"] // r["batch"] for r in cell),
                    }
                )
    return rows


def render_layouts(layouts: dict[str, Any], console: Console | None = None) -> None:
    """The storage-layout probes: a table of cells, then the sizes of each
    layout's open structure after its last run."""
    out = console or Console(width=180)
    check = layouts.get("transition_tables", {})
    rounds = len({r["round"] for r in layouts.get("runs", [])})
    table = Table(
        title=(
            f"storage layouts: pgbench, {layouts['clients']} clients, claim (SKIP LOCKED) + "
            f"complete + add units to the order, {layouts['tasks_per_run']:,} tasks per run; "
            f"median of {rounds} interleaved rounds"
        ),
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    for name, justify in (
        ("finished tasks present", "right"),
        ("per statement", "right"),
        ("layout", "left"),
        ("tasks/s", "right"),
        ("min", "right"),
        ("max", "right"),
        ("x plain (same round)", "right"),
        ("PG CPU ms/task", "right"),
        ("cycles retried", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in layout_rows(layouts):
        rate, ratio = row["tasks_per_s"], row["vs_plain"]
        table.add_row(
            f"{row['history']:,}",
            str(row["batch"]),
            f"{row['layout']}: {layouts['layouts'][row['layout']]}",
            f"{rate.median:,.0f}",
            f"{rate.min:,.0f}",
            f"{rate.max:,.0f}",
            "" if ratio is None else f"{ratio.median:.2f}",
            f"{row['pg_cpu_ms'].median:.3f}",
            f"{row['retried']:,} of {row['cycles']:,}",
        )
    out.print(table)
    errors = sorted({e for r in layouts.get("runs", []) for e in r.get("retry_errors", [])})
    if errors:
        out.print("why cycles were retried: " + "; ".join(errors))
    sizes = Table(
        title="open structure after each layout's last run (MB), and finished rows kept elsewhere",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    for name in (
        "finished tasks present",
        "layout",
        "heap",
        "indexes",
        "rows",
        "dead rows (stats)",
        "finished elsewhere",
    ):
        sizes.add_column(name, justify="left" if name == "layout" else "right")
    runs = layouts.get("runs", [])
    for history in sorted({r["history"] for r in runs}):
        for name in layouts["layouts"]:
            cell = _pick(runs, history=history, layout=name)
            if not cell:
                continue
            last = cell[-1]["sizes"]
            sizes.add_row(
                f"{history:,}",
                name,
                _mb(last["open_table_bytes"]),
                _mb(last["open_indexes_bytes"]),
                f"{last['open_live_rows']:,}" if last["open_live_rows"] is not None else "",
                f"{last['open_dead_rows']:,}" if last["open_dead_rows"] is not None else "",
                _mb(last["finished_elsewhere_bytes"]) if name != "plain" else "(same table)",
            )
    out.print(sizes)
    if check:
        out.print(
            f"transition tables, PostgreSQL {check['server_version']}: an UPDATE moving "
            f"{check['moved_rows']} rows from the open to the finished partition showed "
            f"{check['old_table_rows']} in OLD TABLE and {check['new_table_rows']} in NEW TABLE; "
            f"the accounting trigger added {check['units_added_to_order']:,} units"
        )
