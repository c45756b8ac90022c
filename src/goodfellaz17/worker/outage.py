"""What the worker treats as "the database is away": retry later, never a bug.

Every part of the worker catches exactly these around its database calls and
tries again, with its own pace; anything else is a bug and is logged with its
traceback.
"""

from __future__ import annotations

import psycopg
import psycopg_pool

DB_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError)
DB_RETRY_MAX_SECONDS = 5.0
