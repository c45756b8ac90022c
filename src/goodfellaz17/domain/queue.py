"""Fair-queue policy: where an order's tasks sit in the queue.

Pure numbers, no I/O. The database turns them into positions
(order_task_position in db/schema.sql); the claim reads the queue in
position order.
"""

from __future__ import annotations

# One fair share of queue position (seconds of the queue's clock) per task
# already ahead in the same order: a big order interleaves with later orders
# instead of blocking them.
FAIR_SHARE_SECONDS = 1.0
