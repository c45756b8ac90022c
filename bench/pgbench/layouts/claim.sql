-- Storage-layout probes, first half of every cycle (all layouts alike):
-- claim :limit due tasks with FOR UPDATE SKIP LOCKED through the claim index.
-- The status condition on the outer UPDATE lets a partitioned layout prune
-- to its open partition when planning.
WITH claimed AS (
    UPDATE tasks t SET
        status = 'EXECUTING',
        attempts = t.attempts + 1,
        lease_owner = 'pgbench',
        lease_expires_at = now() + interval '5 minutes',
        fencing_token = nextval('fencing_token_seq'),
        started_at = now()
    FROM (SELECT id
          FROM tasks
          WHERE status IN ('PENDING', 'FAILED_RETRYING')
          ORDER BY position
          LIMIT :limit
          FOR UPDATE SKIP LOCKED) AS due
    WHERE t.id = due.id
      AND t.status IN ('PENDING', 'FAILED_RETRYING')
    RETURNING t.id, t.fencing_token
)
SELECT COALESCE(array_agg(id), '{}') AS ids, COALESCE(array_agg(fencing_token), '{}') AS tokens
FROM claimed
\gset
