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

# An order's tasks follow each other in runs of this many; orders take turns
# a run at a time. It is also the default claim batch
# (GOODFELLAZ17_WORKER_BATCH_SIZE): a claim of one run's length usually
# touches one or two orders, so its completion updates one or two order rows.
# The two are one policy, so the batch size's default is this constant; a
# batch size set otherwise still claims fairly, it only touches more orders.
RUN_LENGTH = 10
