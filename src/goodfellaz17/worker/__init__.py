"""The OrderDeliveryWorker, its collaborators, and the process that runs it alone.

Where to start reading: `worker.py` (the lifecycle and how the parts are
wired), then `claims.py` (the ledger of held claims every part shares), then
the parts in the order a task meets them:

    claimer.py   claim loops, LISTEN, idle timeout, hand-back at shutdown
    executor.py  one task through its backend (chaos latency and failures)
    outcomes.py  batched, fenced outcome writes; node health; what is counted
    leases.py    heartbeat and lease extension (database clock only)
    rescuer.py   orphans back to the queue: run_once() returns what it did
    chaos.py     the operator's chaos settings as this worker sees them
    counters.py  the worker's totals and Prometheus metrics
    outage.py    which errors mean "the database is away, retry"
    runner.py    `goodfellaz17 worker`: one worker process, stopped by signal

The periodic loops (control tick, rescuer) run on goodfellaz17.periodic.
"""
