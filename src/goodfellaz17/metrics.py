"""Prometheus metrics. Names are the contract's and must not change.

Counters and histograms are updated by the worker as work happens; gauges
about the queue are read from the database at scrape time (see
`DatabaseGaugeCollector`), so they are right however many workers run.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
