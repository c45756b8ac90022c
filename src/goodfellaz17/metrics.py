"""Prometheus metrics. Names are the contract's and must not change.

Counters and histograms are updated by the worker as work happens; gauges
about the queue are read from the database at scrape time (see
`DatabaseGaugeCollector`), so they are right however many workers run: every
process that exports them reports the same value, so dashboards and alerts
aggregate them with max(), and the counters with sum().

A scrape never blocks the event loop on the database: prometheus collectors
are synchronous, so `MetricsExporter.render()` first refreshes the gauge
values through the async pool (one statement, bounded by a timeout), then
renders the registry from memory. With the database down a scrape still
answers within that timeout, with `delivery_database_up 0` and the gauges left
out (an absent series is honest; a stale one would hide the outage).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from goodfellaz17.logs import get_logger

if TYPE_CHECKING:
    from goodfellaz17.db.repository import Repository

log = get_logger(__name__)

GAUGE_QUERY_TIMEOUT_SECONDS = 2.0

TASK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class WorkerMetrics:
    """The worker's counters and histograms, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.tasks_total = Counter(
            "delivery_tasks",
            "Tasks that reached a final outcome, by status",
            ["status"],
            registry=registry,
        )
        self.retries_total = Counter(
            "delivery_retries",
            "Task attempts that failed and were scheduled to run again",
            registry=registry,
        )
        self.orphans_recovered_total = Counter(
            "delivery_orphans_recovered",
            "EXECUTING tasks rescued after their lease expired",
            registry=registry,
        )
        self.plays_total = Counter(
            "delivery_plays",
            "Units delivered, or dead-lettered (failed)",
            ["outcome"],
            registry=registry,
        )
        self.task_duration = Histogram(
            "delivery_task_duration_seconds",
            "Time to execute one task through its backend",
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        self.batch_duration = Histogram(
            "delivery_batch_duration_seconds",
            "Time to record one batch of outcomes in the database",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        # Pre-create the labelled series so they export 0 before the first event.
        for status in ("completed", "failed_permanent"):
            self.tasks_total.labels(status=status)
        for outcome in ("delivered", "failed"):
            self.plays_total.labels(outcome=outcome)


class StorageMetrics:
    """The storage maintenance leader's counters (services/storage.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs_total = Counter(
            "delivery_storage_maintenance_runs",
            "Storage maintenance runs, by outcome (done, skipped: another replica leads, failed)",
            ["outcome"],
            registry=registry,
        )
        self.days_created_total = Counter(
            "delivery_storage_days_created",
            "Day partitions (orders and finished tasks) created ahead of time",
            registry=registry,
        )
        self.days_dropped_total = Counter(
            "delivery_storage_days_dropped",
            "Day partitions dropped by retention",
            registry=registry,
        )
        self.rows_purged_total = Counter(
            "delivery_storage_rows_purged",
            "Rows deleted by retention outside the day partitions, by table",
            ["table"],
            registry=registry,
        )
        for outcome in ("done", "skipped", "failed"):
            self.runs_total.labels(outcome=outcome)


_storage_metrics: dict[int, StorageMetrics] = {}


def storage_metrics(registry: CollectorRegistry) -> StorageMetrics:
    """One StorageMetrics per registry (prometheus refuses duplicate names)."""
    key = id(registry)
    if key not in _storage_metrics:
        _storage_metrics[key] = StorageMetrics(registry)
    return _storage_metrics[key]


AUTH_SURFACES = ("api", "console")
AUTH_FAILURE_REASONS = ("missing_key", "invalid_key", "throttled")


def auth_failure_counter(registry: CollectorRegistry) -> Counter:
    """Refused authentication by surface (API key header, console login) and
    reason: no key, a wrong key, or an address throttled after too many wrong
    ones. Every series exists from the start, at 0."""
    counter = Counter(
        "delivery_auth_failures",
        "Refused authentication attempts, by surface and reason",
        ["surface", "reason"],
        registry=registry,
    )
    for surface in AUTH_SURFACES:
        for reason in AUTH_FAILURE_REASONS:
            counter.labels(surface=surface, reason=reason)
    return counter


@dataclass(frozen=True, slots=True)
class DatabaseGauge:
    name: str
    documentation: str
    column: str


UP_METRIC = "delivery_database_up"
UP_DOC = "1 if this process read the gauges from the database at this scrape, else 0"
DURATION_METRIC = "delivery_database_gauges_duration_seconds"
DURATION_DOC = "Time this scrape took to read the database gauges"

# Read from one row of the `metrics_gauges` query. `delivery_tasks_pending` is
# derived (waiting minus retrying), see _values().
DATABASE_GAUGES = (
    DatabaseGauge("delivery_tasks_pending", "Tasks in PENDING (never started)", "tasks_pending"),
    DatabaseGauge(
        "delivery_tasks_retrying",
        "Tasks in FAILED_RETRYING (backing off before their next attempt)",
        "tasks_retrying",
    ),
    DatabaseGauge("delivery_tasks_executing", "Tasks in EXECUTING", "tasks_executing"),
    DatabaseGauge(
        "delivery_tasks_executing_over_5m",
        "Tasks EXECUTING for more than 5 minutes since their claim",
        "tasks_executing_over_5m",
    ),
    DatabaseGauge(
        "delivery_dead_letter_queue",
        "Dead letters awaiting an operator: FAILED_PERMANENT tasks of orders not COMPLETED",
        "dead_letter_queue",
    ),
    DatabaseGauge(
        "delivery_worker_active",
        "Workers with a heartbeat within GOODFELLAZ17_WORKER_STALE_AFTER_SECONDS",
        "workers_active",
    ),
    DatabaseGauge(
        "delivery_orders_processing_over_2h",
        "Orders PROCESSING whose created_at is more than 2 hours ago",
        "orders_processing_over_2h",
    ),
    DatabaseGauge(
        "delivery_orders_processing_over_4h",
        "Orders PROCESSING whose created_at is more than 4 hours ago",
        "orders_processing_over_4h",
    ),
    DatabaseGauge(
        "delivery_invariant_violations",
        "Violations listed by the latest global invariant check (at most 1000; 0 before the first)",
        "invariant_violations",
    ),
    DatabaseGauge(
        "delivery_invariant_last_check_timestamp_seconds",
        "Unix time of the latest global invariant check (absent before the first)",
        "invariant_checked_at",
    ),
    DatabaseGauge(
        "delivery_chaos_enabled", "1 while chaos injection is active, else 0", "chaos_active"
    ),
    DatabaseGauge(
        "delivery_nodes_healthy",
        "Enabled nodes whose circuit is closed or half-open",
        "nodes_healthy",
    ),
    DatabaseGauge("delivery_nodes_registered", "Nodes registered", "nodes_total"),
)


def _values(row: dict[str, Any]) -> dict[str, float | None]:
    """Map one metrics_gauges row onto the gauge columns (None = no sample)."""
    values: dict[str, float | None] = {
        key: (None if value is None else float(value)) for key, value in row.items()
    }
    waiting = values.pop("tasks_waiting", None) or 0.0
    values["tasks_pending"] = max(waiting - (values.get("tasks_retrying") or 0.0), 0.0)
    if values.get("invariant_violations") is None:
        values["invariant_violations"] = 0.0
    return values


class DatabaseGaugeCollector(Collector):
    """Queue and health gauges read from the database at scrape time.

    `refresh()` (async) runs the one `metrics_gauges` statement and keeps the
    values; `collect()` (sync, called by generate_latest) only reads them.
    Scrapes that arrive while a read is in flight wait for that read instead
    of starting their own, so a burst of scrapes costs the database one
    statement, and every scrape still sees values read after it arrived or
    during its wait.
    """

    def __init__(
        self,
        repo: Repository,
        *,
        stale_after_seconds: float,
        timeout: float = GAUGE_QUERY_TIMEOUT_SECONDS,
    ) -> None:
        self._repo = repo
        self._stale_after = stale_after_seconds
        self._timeout = timeout
        self._values: dict[str, float | None] | None = None
        self._duration = math.nan
        self._inflight: asyncio.Future[None] | None = None
        self._reported_down = False

    @property
    def database_up(self) -> bool:
        return self._values is not None

    async def refresh(self) -> None:
        if self._inflight is None:
            read = asyncio.ensure_future(self._read())
            read.add_done_callback(self._read_done)
            self._inflight = read
        # shield: a scraper that hangs up must not cancel the read others wait on
        await asyncio.shield(self._inflight)

    def _read_done(self, read: asyncio.Future[None]) -> None:
        if self._inflight is read:
            self._inflight = None

    async def _read(self) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                row = await self._repo.metrics_gauges(
                    stale_after_seconds=self._stale_after, connect_timeout=self._timeout
                )
        except (psycopg.Error, TimeoutError, OSError) as exc:  # pool errors are psycopg.Errors
            self._values = None
            if not self._reported_down:
                log.warning("metrics: database unavailable", error=type(exc).__name__)
                self._reported_down = True
        else:
            self._values = _values(row)
            self._reported_down = False
        self._duration = time.perf_counter() - started

    def describe(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily(name, documentation)
            for name, documentation in (
                (UP_METRIC, UP_DOC),
                (DURATION_METRIC, DURATION_DOC),
                *((g.name, g.documentation) for g in DATABASE_GAUGES),
            )
        ]

    def collect(self) -> Iterable[Metric]:
        values = self._values
        families = [GaugeMetricFamily(UP_METRIC, UP_DOC, value=0.0 if values is None else 1.0)]
        if not math.isnan(self._duration):
            families.append(GaugeMetricFamily(DURATION_METRIC, DURATION_DOC, value=self._duration))
        if values is not None:
            for gauge in DATABASE_GAUGES:
                value = values.get(gauge.column)
                if value is not None:
                    families.append(GaugeMetricFamily(gauge.name, gauge.documentation, value=value))
        return families


def new_process_registry() -> CollectorRegistry:
    """A registry of this process's own: process, platform and GC metrics
    (the default registry is left alone, so several apps in one process, as
    in tests, never share counters)."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class MetricsExporter:
    """One process's metrics endpoint: its registry, with the database gauges
    refreshed (asynchronously) just before each render."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, registry: CollectorRegistry, gauges: DatabaseGaugeCollector | None = None
    ) -> None:
        self.registry = registry
        self.gauges = gauges
        if gauges is not None:
            registry.register(gauges)

    async def render(self) -> bytes:
        if self.gauges is not None:
            await self.gauges.refresh()
        return generate_latest(self.registry)
