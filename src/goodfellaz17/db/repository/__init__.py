"""One typed method per named query: the only place the engine runs SQL.

Methods take a connection or use the pool; they never decide policy (that is
the worker's and the services' job) and never loop over tasks issuing one
statement each. Each method carries its query's name (db/queries.sql), and
the methods live by subject, one module each, like the queries' sections:
orders, tasks, nodes, workers (and chaos), invariants, operators (audit
trail, capacity, metrics, console), console sessions, storage (retention);
`Repository` is all of them.
"""

from __future__ import annotations

from goodfellaz17.db.repository.base import Row
from goodfellaz17.db.repository.invariants import InvariantQueries
from goodfellaz17.db.repository.nodes import NodeOutcome, NodeQueries
from goodfellaz17.db.repository.operators import OperatorQueries
from goodfellaz17.db.repository.orders import OrderQueries
from goodfellaz17.db.repository.sessions import SessionQueries
from goodfellaz17.db.repository.storage import StorageQueries
from goodfellaz17.db.repository.tasks import ClaimedTask, TaskFailure, TaskQueries
from goodfellaz17.db.repository.workers import WorkerQueries

__all__ = ["ClaimedTask", "NodeOutcome", "Repository", "Row", "TaskFailure"]


class Repository(
    OrderQueries,
    TaskQueries,
    NodeQueries,
    WorkerQueries,
    InvariantQueries,
    OperatorQueries,
    SessionQueries,
    StorageQueries,
):
    """Every named query, by subject; built on one connection pool."""
