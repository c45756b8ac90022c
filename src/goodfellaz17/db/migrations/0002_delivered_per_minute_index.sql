-- transactional: false
--
-- The console's delivery chart and rate: units of tasks COMPLETED per minute
-- over the last hour (query task_delivered_per_minute). A partial index on
-- executed_at that carries the quantity turns that into an index-only range
-- scan of the last hour, whatever the size of the history.
--
-- CONCURRENTLY, so that applying it to a busy production table does not stop
-- the workers' writes while the index builds; that cannot run inside a
-- transaction, hence `transactional: false`. A build that failed half-way
-- leaves an INVALID index behind, which the DROP removes when the migration
-- is run again.

DROP INDEX CONCURRENTLY IF EXISTS order_tasks_completed_executed_at_idx;

CREATE INDEX CONCURRENTLY order_tasks_completed_executed_at_idx
    ON order_tasks (executed_at) INCLUDE (quantity)
    WHERE status = 'COMPLETED';
