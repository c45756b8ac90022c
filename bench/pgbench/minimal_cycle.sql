-- The bare queue cycle on the product's schema, for pgbench: claim a batch
-- of due tasks with FOR UPDATE SKIP LOCKED through the due index, then
-- complete them in a second statement (two commits, like any worker that
-- must not lose a claim it is executing). The accounting triggers run on
-- both statements. No nodes, no chaos check, no order join: the ceiling
-- the product's own SQL is compared with.
WITH claimed AS (
    UPDATE order_tasks t SET
        status = 'EXECUTING',
        attempts = t.attempts + 1,
        lease_owner = :worker_id,
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        fencing_token = nextval('order_tasks_fencing_token_seq'),
        started_at = now()
    FROM (SELECT id
          FROM order_tasks
          WHERE status IN ('PENDING', 'FAILED_RETRYING')
            AND (retry_after IS NULL OR retry_after <= now())
          ORDER BY queue_position
          LIMIT :limit
          FOR UPDATE SKIP LOCKED) AS due
    WHERE t.id = due.id
    RETURNING t.id, t.fencing_token
)
SELECT COALESCE(array_agg(id), '{}') AS ids, COALESCE(array_agg(fencing_token), '{}') AS tokens
FROM claimed
\gset
UPDATE order_tasks t SET
    status = 'COMPLETED',
    executed_at = now()
FROM unnest(:ids::uuid[], :tokens::bigint[]) AS c (id, token)
WHERE t.id = c.id
  AND t.fencing_token = c.token
  AND t.status = 'EXECUTING';
