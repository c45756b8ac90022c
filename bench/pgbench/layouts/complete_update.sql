-- Second half of the cycle for the plain and listpart layouts: complete the
-- claimed tasks, fenced by their tokens, in one UPDATE (in listpart the rows
-- move to the finished partition); the statement-level trigger adds the units
-- to the orders.
UPDATE tasks t SET
    status = 'COMPLETED',
    finished_at = now(),
    lease_owner = NULL,
    lease_expires_at = NULL
FROM unnest(:ids::bigint[], :tokens::bigint[]) AS c (id, token)
WHERE t.id = c.id
  AND t.fencing_token = c.token
  AND t.status = 'EXECUTING';
