"""What to measure and how much: command-line options with defaults that fit
the whole `make bench` in well under 15 minutes on a 2-core machine.

`make bench BENCH_ARGS="--rounds 5 --only engine,pgbench"` changes them;
`--quick` shrinks every size for a smoke run of about a minute.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

SECTIONS = (
    "pgbench",
    "peer",
    "graphile",
    "pgboss",
    "engine",
    "pickup",
    "api",
    "open_txn",
    "scale",
    "profile",
    "layouts",
)
# The storage-layout probes load millions of rows: only on request
# (`--layouts`, or `--only layouts`).
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "layouts")


def _csv_ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return values


def _csv_names(allowed: tuple[str, ...]) -> object:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)} (choose from {', '.join(allowed)})"
            )
        return names

    return parse


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("GOODFELLAZ17_"):
        raise argparse.ArgumentTypeError(f"expected GOODFELLAZ17_NAME=value, got {text!r}")
    return key, value


@dataclass(frozen=True)
class BenchConfig:
    rounds: int = 3
    batch: int = 10
    quantity: int = 15_000
    task_size: int = 400

    pgbench_tasks: int = 0  # 0: the engine's small run size (queue size changes the figure)
    pgbench_large: bool = True  # also the engine's large size, product SQL, best client count
    pgbench_clients: tuple[int, ...] = (1, 2, 4)
    pgbench_variants: tuple[str, ...] = ("product", "minimal")
    # The raw SQL cycle of the same-run comparison: the minimal script on a
    # queue of the engine's large size, at each of these claims per statement.
    compare_batches: tuple[int, ...] = (10, 100)
    compare_clients: int = 4

    peer_jobs: int = 0  # 0: as many as the engine's small run has tasks
    peer_processes: int = 4
    peer_concurrency: int = 10
    peer_delete_jobs: str = "never"

    # The Node peers (bench/peers): as many jobs as the engine's large run.
    node_jobs: int = 0
    node_concurrency: int = 10
    graphile_local_queue: int = 500
    graphile_refetch_ms: int = 10
    pgboss_batch: int = 100
    pgboss_poll_seconds: float = 0.5

    engine_orders: int = 100
    engine_large_tasks: int = 19_000
    engine_processes: tuple[int, ...] = (1, 2)
    engine_env: tuple[tuple[str, str], ...] = ()

    pickup_samples: int = 50
    api_sequential: int = 100
    api_concurrent: int = 300
    api_clients: int = 10

    open_txn_hold_seconds: float = 60.0
    open_txn_run_tasks: int = 10_000  # the queue is topped up by this many at a time
    open_txn_windows: int = 6

    scale_tasks: int = 1_000_000
    scale_repeats: int = 3

    profile_tasks: int = 6_000
    profile_rate: int = 100

    layout_batches: tuple[int, ...] = (10, 100, 500)
    layout_clients: int = 4
    layout_tasks: int = 60_000  # tasks each pgbench run completes
    layout_history: int = 5_000_000  # finished tasks already present ("with history")
    layout_rounds: int = 3

    only: tuple[str, ...] = DEFAULT_SECTIONS
    out: Path = Path("bench/results.json")
    out_dir: Path = Path("bench/out")
    profile_svg: Path = Path("bench/profile.svg")
    data_dir: Path | None = None
    keep: bool = False
    run_timeout: float = 300.0
    quick: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def runs(self, section: str) -> bool:
        return section in self.only

    @property
    def small_tasks(self) -> int:
        from goodfellaz17.domain.plan import task_count

        return self.engine_orders * task_count(self.quantity, self.task_size)

    @property
    def pgbench_task_count(self) -> int:
        return self.pgbench_tasks or self.small_tasks

    @property
    def peer_job_count(self) -> int:
        return self.peer_jobs or self.small_tasks

    @property
    def large_tasks(self) -> int:
        """Tasks in the engine's large run: whole orders, at least
        `engine_large_tasks` (19,000 = 500 orders of 38 tasks)."""
        from goodfellaz17.domain.plan import task_count

        per_order = task_count(self.quantity, self.task_size)
        return -(-self.engine_large_tasks // per_order) * per_order

    @property
    def node_job_count(self) -> int:
        return self.node_jobs or self.large_tasks


QUICK = {
    "rounds": 3,
    "pgbench_tasks": 0,
    "pgbench_clients": (1, 2),
    "peer_jobs": 100,
    "engine_orders": 4,
    "engine_large_tasks": 400,
    "pickup_samples": 5,
    "api_sequential": 10,
    "api_concurrent": 20,
    "api_clients": 4,
    "open_txn_hold_seconds": 6.0,
    "open_txn_run_tasks": 400,
    "open_txn_windows": 3,
    "scale_tasks": 4_000,
    "scale_repeats": 3,
    "profile_tasks": 400,
    "layout_tasks": 2_000,
    "layout_history": 20_000,
}


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="goodfellaz17 benchmarks: one table, results in bench/results.json.",
    )
    add = p.add_argument
    add("--rounds", type=int, default=d.rounds, help="runs per figure (median, min, max)")
    add("--batch", type=int, default=d.batch, help="claim batch size, pgbench and engine alike")
    add("--quantity", type=int, default=d.quantity, help="units per order")
    add("--task-size", type=int, default=d.task_size, help="units per task")
    add(
        "--pgbench-tasks",
        type=int,
        default=d.pgbench_tasks,
        help="tasks per pgbench run (0: as many as the engine's small run)",
    )
    add(
        "--no-pgbench-large",
        dest="pgbench_large",
        action="store_false",
        help="skip the pgbench run at the engine's large queue size",
    )
    add("--pgbench-clients", type=_csv_ints, default=d.pgbench_clients)
    add(
        "--pgbench-variants",
        type=_csv_names(("product", "minimal")),
        default=d.pgbench_variants,
        help="product: the engine's own claim/complete SQL; minimal: bare SKIP LOCKED cycle",
    )
    add("--peer-jobs", type=int, default=d.peer_jobs, help="0: same as the engine's small run")
    add("--peer-processes", type=int, default=d.peer_processes)
    add("--peer-concurrency", type=int, default=d.peer_concurrency)
    add("--peer-delete-jobs", choices=("never", "successful", "always"), default=d.peer_delete_jobs)
    add("--engine-orders", type=int, default=d.engine_orders, help="orders in the small run")
    add("--engine-large-tasks", type=int, default=d.engine_large_tasks, help="0: skip")
    add("--engine-processes", type=_csv_ints, default=d.engine_processes)
    add(
        "--engine-env",
        type=_env_pair,
        action="append",
        default=[],
        help="extra GOODFELLAZ17_NAME=value for worker processes (repeatable)",
    )
    add("--pickup-samples", type=int, default=d.pickup_samples, help="orders per pick-up run")
    add("--api-sequential", type=int, default=d.api_sequential)
    add("--api-concurrent", type=int, default=d.api_concurrent)
    add("--api-clients", type=int, default=d.api_clients)
    add("--open-txn-hold-seconds", type=float, default=d.open_txn_hold_seconds)
    add("--open-txn-run-tasks", type=int, default=d.open_txn_run_tasks)
    add("--open-txn-windows", type=int, default=d.open_txn_windows)
    add("--scale-tasks", type=int, default=d.scale_tasks)
    add("--scale-repeats", type=int, default=d.scale_repeats)
    add("--profile-tasks", type=int, default=d.profile_tasks)
    add("--compare-batches", type=_csv_ints, default=d.compare_batches)
    add("--compare-clients", type=int, default=d.compare_clients)
    add("--node-jobs", type=int, default=d.node_jobs, help="0: same as the engine's large run")
    add("--node-concurrency", type=int, default=d.node_concurrency)
    add("--graphile-local-queue", type=int, default=d.graphile_local_queue)
    add("--graphile-refetch-ms", type=int, default=d.graphile_refetch_ms)
    add("--pgboss-batch", type=int, default=d.pgboss_batch)
    add("--pgboss-poll-seconds", type=float, default=d.pgboss_poll_seconds)
    add(
        "--layouts",
        action="store_true",
        help="also run the storage-layout probes (loads millions of rows; ~15 min)",
    )
    add("--layout-batches", type=_csv_ints, default=d.layout_batches)
    add("--layout-clients", type=int, default=d.layout_clients)
    add("--layout-tasks", type=int, default=d.layout_tasks)
    add("--layout-history", type=int, default=d.layout_history)
    add("--layout-rounds", type=int, default=d.layout_rounds)
    add("--only", type=_csv_names(SECTIONS), default=d.only, help=",".join(SECTIONS))
    add("--skip", type=_csv_names(SECTIONS), default=(), help="sections to leave out")
    add("--out", type=Path, default=d.out)
    add("--data-dir", type=Path, default=None, help="server folder (default: a temp folder)")
    add("--keep", action="store_true", help="keep the server folder afterwards")
    add("--quick", action="store_true", help="tiny sizes: a smoke run of about a minute")
    a = p.parse_args(argv)

    values = {f.name: getattr(a, f.name) for f in fields(BenchConfig) if hasattr(a, f.name)}
    values["engine_env"] = tuple(a.engine_env)
    only = a.only + (("layouts",) if a.layouts and "layouts" not in a.only else ())
    values["only"] = tuple(s for s in only if s not in a.skip)
    cfg = BenchConfig(**values)
    if a.quick:
        cfg = replace(cfg, **QUICK)  # type: ignore[arg-type]
    if cfg.rounds < 1:
        p.error("--rounds must be at least 1")
    return cfg
