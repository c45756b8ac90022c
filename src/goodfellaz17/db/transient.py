"""Database errors that mean "run it again": a deadlock victim, or a
serialization failure. Since order_tasks is partitioned by status, the
latter also comes from a row that moved to another partition (a task that
finished, or was drained) while the statement waited for its lock:
PostgreSQL cannot follow it there and refuses the statement, which is
safe to run again from the top, where it finds the row as it now is.

Only what can be run again is run again: a whole transaction, or a single
statement outside one.
"""

from __future__ import annotations

import psycopg
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

# Named one by one: psycopg does not derive them from TransactionRollback.
TRANSIENT_DB_ERRORS = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.TransactionRollback,
)
MAX_ATTEMPTS = 5


def retrying_transient() -> AsyncRetrying:
    """`async for attempt in retrying_transient(): with attempt: ...`"""
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_DB_ERRORS),
        stop=stop_after_attempt(MAX_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.005, max=0.2),
        reraise=True,
    )
