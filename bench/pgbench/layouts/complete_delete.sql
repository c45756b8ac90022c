-- Second half of the cycle for the history layout: the claimed tasks leave
-- the open table and enter the history in one statement, fenced by their
-- tokens; the history's statement-level trigger adds the units to the orders.
WITH finished AS (
    DELETE FROM tasks t
    USING unnest(:ids::bigint[], :tokens::bigint[]) AS c (id, token)
    WHERE t.id = c.id
      AND t.fencing_token = c.token
      AND t.status = 'EXECUTING'
    RETURNING t.*
)
INSERT INTO tasks_history (id, order_id, quantity, status, position, attempts, lease_owner,
                           lease_expires_at, fencing_token, started_at, finished_at, created_at)
SELECT id, order_id, quantity, 'COMPLETED', position, attempts, NULL,
       NULL, fencing_token, started_at, now(), created_at
FROM finished;
