"""What one worker has done, counted once: its totals and its Prometheus metrics.

The totals feed the worker's heartbeat (the `workers` table) and its status;
the metrics are the contract's `delivery_*` series. Both count only what the
database accepted: whoever records an outcome or a rescue counts it here, and
nothing else does. This module never touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry

from goodfellaz17.metrics import WorkerMetrics

_metrics_by_registry: dict[int, WorkerMetrics] = {}


def worker_metrics(registry: CollectorRegistry = REGISTRY) -> WorkerMetrics:
    """One WorkerMetrics per registry (prometheus refuses duplicate names)."""
    key = id(registry)
    if key not in _metrics_by_registry:
        _metrics_by_registry[key] = WorkerMetrics(registry)
    return _metrics_by_registry[key]


@dataclass
class WorkerCounters:
    processed: int = 0
    completed: int = 0
    failed: int = 0
    retries: int = 0
    recovered_orphans: int = 0
    leases_lost: int = 0


class BoundMetrics:
    """The labelled children resolved once: no label lookups per task."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.completed = metrics.tasks_total.labels(status="completed")
        self.dead_lettered = metrics.tasks_total.labels(status="failed_permanent")
        self.delivered_units = metrics.plays_total.labels(outcome="delivered")
        self.failed_units = metrics.plays_total.labels(outcome="failed")
        self.retries = metrics.retries_total
        self.orphans = metrics.orphans_recovered_total
        self.task_duration = metrics.task_duration
        self.batch_duration = metrics.batch_duration
