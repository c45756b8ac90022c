-- Every runtime SQL statement of goodfellaz17, by name.
--
-- Names are noun first (order_create, task_claim_batch). Every state change
-- of a task is guarded in its WHERE clause (status and fencing token), so a
-- statement that changes zero rows means "someone else owns this now".
-- Batch statements take parallel arrays and unnest them: one round trip per
-- batch, never one per task.

-- ---------------------------------------------------------------- orders

-- name: order_create
-- The order and all its tasks in one statement (one round trip, one
-- transaction). The idempotency key's row is written first: of two requests
-- with one key in one scope, the second waits there for the first to commit
-- and then inserts nothing; no row comes back for it (nor for a key used
-- before keys had scopes: 'legacy', which every caller matches). The order's
-- id is a UUIDv7 (its day partition: db/schema.sql, "Storage").
WITH new_key AS (
    INSERT INTO order_idempotency_keys (scope, key, order_id, request_hash)
    SELECT %(idempotency_scope)s, %(idempotency_key)s::text, uuid_v7(), %(request_hash)s
    WHERE %(idempotency_key)s::text IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM order_idempotency_keys
                      WHERE scope = 'legacy' AND key = %(idempotency_key)s::text)
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING order_id
), new_order AS (
    INSERT INTO orders (id, quantity, target, backend, task_count, idempotency_scope,
                        idempotency_key, request_hash)
    SELECT COALESCE((SELECT order_id FROM new_key), uuid_v7()),
           %(quantity)s, %(target)s, %(backend)s, cardinality(%(sizes)s::int[]),
           CASE WHEN %(idempotency_key)s::text IS NOT NULL THEN %(idempotency_scope)s END,
           %(idempotency_key)s, %(request_hash)s
    WHERE %(idempotency_key)s::text IS NULL OR EXISTS (SELECT 1 FROM new_key)
    RETURNING *
), new_tasks AS (
    -- The order joins the queue at its front, its tasks in runs
    -- (order_queue_start and order_task_position, db/schema.sql).
    INSERT INTO order_tasks (order_id, seq, quantity, queue_position, created_at, backend)
    SELECT o.id, s.ord - 1, s.qty,
           order_task_position(q.start, o.id, (s.ord - 1)::int, %(fair_share_seconds)s,
                               %(run_length)s),
           o.created_at, o.backend
    FROM new_order o
    CROSS JOIN LATERAL (SELECT order_queue_start(o.created_at) AS start) q
    CROSS JOIN unnest(%(sizes)s::int[]) WITH ORDINALITY AS s (qty, ord)
    RETURNING 1
)
SELECT o.*, (SELECT count(*) FROM new_tasks) AS tasks_created
FROM new_order o;

-- name: order_get
SELECT * FROM orders WHERE id = %(order_id)s;

-- name: order_get_by_idempotency_key
-- The order a caller created with this key (or one from before keys had
-- scopes, which every caller matches).
SELECT o.*
FROM order_idempotency_keys k
JOIN orders o ON o.id = k.order_id
WHERE k.key = %(idempotency_key)s
  AND k.scope IN (%(idempotency_scope)s, 'legacy')
ORDER BY k.scope = 'legacy'
LIMIT 1;

-- name: order_list
SELECT * FROM orders
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(before_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(before_created_at)s::timestamptz, %(before_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: order_task_summary
-- Count and units per task status of one order.
SELECT status, count(*) AS tasks, COALESCE(sum(quantity), 0) AS units
FROM order_tasks
WHERE order_id = %(order_id)s
GROUP BY status;

-- name: order_tasks_list
SELECT id, order_id, seq, quantity, status, attempts, retry_after, last_error, executed_at,
       lease_owner, lease_expires_at, fencing_token, node_id, started_at, created_at
FROM order_tasks
WHERE order_id = %(order_id)s
ORDER BY seq;

-- name: order_progress
-- One snapshot of an order's progress: the order, tasks and units per task
-- status, and the units completed within the recent window (for the rate).
SELECT o.id, o.status, o.quantity, o.delivered, o.failed_permanent_plays, o.task_count,
       o.backend, o.created_at, o.started_at, o.completed_at, now() AS db_now,
       COALESCE(s.by_status, '{}'::jsonb) AS by_status,
       COALESCE(r.recent_units, 0) AS recent_units
FROM orders o
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(x.status, jsonb_build_object('tasks', x.tasks, 'units', x.units))
               AS by_status
    FROM (SELECT status, count(*) AS tasks, sum(quantity) AS units
          FROM order_tasks
          WHERE order_id = o.id
          GROUP BY status) x
) s ON true
LEFT JOIN LATERAL (
    SELECT sum(quantity) AS recent_units
    FROM order_tasks
    WHERE order_id = o.id AND status = 'COMPLETED'
      AND executed_at > now() - make_interval(secs => %(window_seconds)s)
) r ON true
WHERE o.id = %(order_id)s;

-- name: order_failed_tasks
-- The order's dead-letter queue, latest failure first; `total` and
-- `total_units` count all of them, however many the limit shows. Delivery
-- attempts and orphanings (worker crashes) are two counts, two budgets.
SELECT id, seq, quantity, attempts, orphanings, last_error, executed_at, node_id, lease_owner,
       count(*) OVER () AS total, sum(quantity) OVER () AS total_units
FROM order_tasks
WHERE order_id = %(order_id)s AND status = 'FAILED_PERMANENT'
ORDER BY executed_at DESC NULLS LAST, seq
LIMIT %(limit)s;

-- name: order_lock_for_action
-- An operator action's first statement. Locks the order's open tasks in id
-- order, task rows before the order row as the accounting triggers do, so an
-- action and the workers queue behind each other instead of deadlocking; a
-- locked PENDING task cannot be claimed meanwhile (claims SKIP LOCKED).
-- Returns the order with its open tasks by status; no row: no such order.
WITH locked AS (
    SELECT id, status
    FROM order_tasks
    WHERE order_id = %(order_id)s AND status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')
    ORDER BY id
    FOR UPDATE
), open_tasks AS (
    SELECT count(*) FILTER (WHERE status = 'PENDING')         AS pending,
           count(*) FILTER (WHERE status = 'EXECUTING')       AS executing,
           count(*) FILTER (WHERE status = 'FAILED_RETRYING') AS retrying
    FROM locked
)
SELECT o.id, o.status, o.quantity, o.delivered, o.failed_permanent_plays,
       t.pending, t.executing, t.retrying
FROM orders o CROSS JOIN open_tasks t
WHERE o.id = %(order_id)s;

-- name: order_tasks_retry_now
-- The runbook's "force immediate retry", with a queue position of now so the
-- tasks are claimed promptly rather than behind work queued since they failed.
UPDATE order_tasks SET
    retry_after = now(),
    queue_position = extract(epoch FROM now())
WHERE order_id = %(order_id)s AND status = 'FAILED_RETRYING'
RETURNING id, quantity;

-- name: order_tasks_drain_dead_letters
-- The runbook's drain (FAILED_PERMANENT → FAILED_RETRYING, attempts from 0,
-- due now), queued at now. A COMPLETED order becomes PROCESSING again (trigger).
UPDATE order_tasks SET
    status = 'FAILED_RETRYING',
    attempts = 0,
    retry_after = now(),
    queue_position = extract(epoch FROM now())
WHERE order_id = %(order_id)s AND status = 'FAILED_PERMANENT'
RETURNING id, quantity;

-- name: order_force_complete
-- The runbook's force completion, verbatim but for the parameter. The
-- orders_after_complete trigger dead-letters the open tasks, and the
-- accounting triggers add them to failed_permanent_plays.
UPDATE orders SET status = 'COMPLETED',
  delivered = (SELECT COALESCE(SUM(quantity), 0) FROM order_tasks
               WHERE order_id = orders.id AND status = 'COMPLETED'),
  failed_permanent_plays = (SELECT COALESCE(SUM(quantity), 0) FROM order_tasks
               WHERE order_id = orders.id AND status = 'FAILED_PERMANENT')
WHERE id = %(order_id)s
RETURNING id;

-- name: order_tasks_cancel_open
-- An operator's cancel: the order's remaining tasks go to the dead-letter
-- queue with a last_error that says so. EXECUTING tasks only when asked:
-- their worker's completion is fenced on status and then changes nothing.
UPDATE order_tasks SET
    status = 'FAILED_PERMANENT',
    last_error = %(reason)s,
    executed_at = now(),
    retry_after = NULL,
    lease_expires_at = NULL
WHERE order_id = %(order_id)s
  AND (status IN ('PENDING', 'FAILED_RETRYING')
       OR (%(include_executing)s AND status = 'EXECUTING'))
RETURNING id, quantity;

-- ---------------------------------------------------------------- tasks (the worker's hot path)

-- name: task_claim_batch
-- Claim up to `limit` due tasks in fair queue order, skipping rows other
-- workers hold, only for backends with a healthy node, never for a COMPLETED
-- order, and not at all while chaos injection pauses the workers. Each claim
-- gets a new fencing token and a node, round-robin over the healthy ones.
-- The statement itself is the function task_claim_batch (migration 0007),
-- so that its plan never depends on the tables' statistics.
SELECT * FROM task_claim_batch(%(worker_id)s::text, %(limit)s::int, %(lease_seconds)s::float8,
                               %(from_position)s::float8, %(node_offset)s::int);

-- name: task_next_retry_at
-- When the earliest backing-off task becomes due, so an idle worker can wake then.
SELECT min(retry_after) AS next_retry_at, now() AS db_now
FROM order_tasks
WHERE status = 'FAILED_RETRYING';

-- name: task_record_outcomes
-- One statement (one round trip) records a whole batch of outcomes. Both
-- halves are fenced: only the claim that still holds the token may complete
-- or fail its task; a worker whose lease was rescued or re-claimed changes
-- nothing and counts nothing. Retryable failures back off (the delay comes
-- with full jitter from the worker); permanent errors and exhausted attempts
-- go to the dead-letter queue. The accounting triggers add the units to the
-- orders once for the statement.
-- The statement itself is the function task_record_outcomes (migration 0007),
-- so that its plan never depends on the tables' statistics.
SELECT * FROM task_record_outcomes(
    %(done_ids)s::uuid[], %(done_tokens)s::bigint[],
    %(failed_ids)s::uuid[], %(failed_tokens)s::bigint[], %(errors)s::text[],
    %(permanent)s::boolean[], %(delays)s::double precision[], %(max_attempts)s::int);

-- name: task_release_many
-- A stopping worker hands back claims it never started: PENDING again, and
-- the attempt it took is refunded.
UPDATE order_tasks t SET
    status = 'PENDING',
    attempts = greatest(t.attempts - 1, 0),
    retry_after = NULL,
    lease_expires_at = NULL,
    node_id = NULL,
    started_at = NULL
FROM unnest(%(ids)s::uuid[], %(tokens)s::bigint[]) AS c (id, token)
WHERE t.id = c.id
  AND t.fencing_token = c.token
  AND t.status = 'EXECUTING'
RETURNING t.id;

-- name: task_extend_leases
-- Heartbeat for long tasks. A task missing from the result has lost its
-- lease: its worker must stop counting on it.
UPDATE order_tasks t SET
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM unnest(%(ids)s::uuid[], %(tokens)s::bigint[]) AS c (id, token)
WHERE t.id = c.id
  AND t.fencing_token = c.token
  AND t.status = 'EXECUTING'
RETURNING t.id;

-- name: task_lock_orphans
-- The rescuer's first step: lock up to `limit` tasks EXECUTING past their
-- lease (their worker died or hung), oldest lease first. SKIP LOCKED:
-- several rescuers never collide, and a task whose worker is completing it
-- right now is left to that worker. The rescuer decides what becomes of each
-- (domain/retry.py: OrphanPolicy, the same backoff as any failure, its own
-- budget) and applies that with task_rescue_orphans in the same transaction.
SELECT id, fencing_token, attempts, orphanings
FROM order_tasks
WHERE status = 'EXECUTING' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: task_rescue_orphans
-- The rescuer's decisions, in one statement: each orphan back to
-- FAILED_RETRYING after its delay, or to the dead-letter queue once its
-- orphan budget is spent (a poison pill, which last_error names). A crash is
-- not a delivery failure: the lost claim's attempt is refunded and the
-- orphaning counted instead. Guarded like every transition: only a task
-- still EXECUTING past its lease under the token it was locked with changes.
-- last_error always starts 'orphaned: worker <id> lost its lease' (the
-- runbook's queries match on it).
UPDATE order_tasks t SET
    status = CASE WHEN r.dead_letter THEN 'FAILED_PERMANENT' ELSE 'FAILED_RETRYING' END,
    retry_after = CASE WHEN r.dead_letter THEN NULL ELSE now() + make_interval(secs => r.delay) END,
    queue_position = CASE WHEN r.dead_letter THEN t.queue_position
                          ELSE extract(epoch FROM now()) + r.delay END,
    attempts = greatest(t.attempts - 1, 0),
    orphanings = t.orphanings + 1,
    last_error = format('orphaned: worker %%s lost its lease (expired %%s, orphaned %%s times)',
                        t.lease_owner, t.lease_expires_at, t.orphanings + 1)
                 || CASE WHEN r.dead_letter
                         THEN '; the orphan budget (GOODFELLAZ17_MAX_ORPHANINGS) is spent:'
                              ' the task may be killing its workers'
                         ELSE '' END,
    executed_at = now()
FROM unnest(%(ids)s::uuid[], %(tokens)s::bigint[], %(dead_letter)s::boolean[],
            %(delays)s::double precision[]) AS r (id, token, dead_letter, delay)
WHERE t.id = r.id
  AND t.fencing_token = r.token
  AND t.status = 'EXECUTING'
  AND t.lease_expires_at < now()
RETURNING t.id, t.order_id, t.status, t.attempts, t.orphanings, t.lease_owner, t.node_id,
          t.quantity,
          (SELECT n.node_identifier FROM nodes n WHERE n.id = t.node_id) AS node_identifier;

-- ---------------------------------------------------------------- nodes

-- name: node_record_outcomes
-- Per node: units delivered, failures that count against its health, and the
-- failures since its last success in this batch. Consecutive failures at the
-- threshold open the circuit for the cool-down; a success closes it. All
-- arithmetic reads the locked row (n), so concurrent workers never lose counts.
UPDATE nodes n SET
    total_delivered = n.total_delivered + u.delivered_units,
    total_failures = n.total_failures + u.failures,
    consecutive_failures = CASE WHEN u.had_success THEN u.trailing_failures
                                ELSE n.consecutive_failures + u.trailing_failures END,
    circuit_state = CASE
        WHEN (CASE WHEN u.had_success THEN u.trailing_failures
                   ELSE n.consecutive_failures + u.trailing_failures END) >= %(threshold)s
            THEN 'OPEN'
        WHEN u.had_success THEN 'CLOSED'
        ELSE n.circuit_state END,
    circuit_opened_until = CASE
        WHEN (CASE WHEN u.had_success THEN u.trailing_failures
                   ELSE n.consecutive_failures + u.trailing_failures END) >= %(threshold)s
            THEN CASE WHEN n.circuit_state = 'OPEN' AND n.circuit_opened_until > now()
                      THEN n.circuit_opened_until
                      ELSE now() + make_interval(secs => %(cooldown_seconds)s) END
        WHEN u.had_success THEN NULL
        ELSE n.circuit_opened_until END,
    last_success_at = CASE WHEN u.had_success THEN now() ELSE n.last_success_at END,
    last_failure_at = CASE WHEN u.failures > 0 THEN now() ELSE n.last_failure_at END,
    last_error = COALESCE(u.last_error, n.last_error),
    updated_at = now()
FROM unnest(%(node_ids)s::bigint[], %(delivered_units)s::bigint[], %(failures)s::int[],
            %(had_success)s::boolean[], %(trailing_failures)s::int[], %(last_errors)s::text[])
     AS u (node_id, delivered_units, failures, had_success, trailing_failures, last_error)
WHERE n.id = u.node_id;

-- name: node_create
INSERT INTO nodes (provider, node_identifier, endpoint, capacity_per_hour)
VALUES (%(provider)s, %(node_identifier)s, %(endpoint)s, %(capacity_per_hour)s)
ON CONFLICT (provider, node_identifier) DO NOTHING
RETURNING *,
    CASE WHEN NOT enabled THEN 'DISABLED'
         WHEN circuit_state = 'OPEN' AND circuit_opened_until <= now() THEN 'HALF_OPEN'
         ELSE circuit_state END AS effective_state;

-- name: node_list
SELECT *,
    CASE WHEN NOT enabled THEN 'DISABLED'
         WHEN circuit_state = 'OPEN' AND circuit_opened_until <= now() THEN 'HALF_OPEN'
         ELSE circuit_state END AS effective_state,
    enabled AND (circuit_state <> 'OPEN' OR circuit_opened_until <= now()) AS healthy
FROM nodes
ORDER BY provider, node_identifier;

-- name: node_set_enabled
UPDATE nodes SET enabled = %(enabled)s, updated_at = now(),
    consecutive_failures = CASE WHEN %(enabled)s THEN 0 ELSE consecutive_failures END,
    circuit_state = CASE WHEN %(enabled)s THEN 'CLOSED' ELSE circuit_state END,
    circuit_opened_until = CASE WHEN %(enabled)s THEN NULL ELSE circuit_opened_until END
WHERE id = %(node_id)s
RETURNING *,
    CASE WHEN NOT enabled THEN 'DISABLED'
         WHEN circuit_state = 'OPEN' AND circuit_opened_until <= now() THEN 'HALF_OPEN'
         ELSE circuit_state END AS effective_state;

-- ---------------------------------------------------------------- workers

-- name: worker_register
INSERT INTO workers (id, hostname, pid)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s)
ON CONFLICT (id) DO UPDATE SET
    status = 'RUNNING', last_heartbeat_at = now(), stopped_at = NULL;

-- name: worker_heartbeat
UPDATE workers SET
    last_heartbeat_at = now(),
    status = %(status)s,
    stopped_at = CASE WHEN %(status)s = 'STOPPED' THEN now() ELSE NULL END,
    total_processed = %(total_processed)s,
    total_completed = %(total_completed)s,
    total_failed = %(total_failed)s,
    total_retries = %(total_retries)s,
    recovered_orphans = %(recovered_orphans)s
WHERE id = %(worker_id)s;

-- name: worker_list
-- Most recently heard from first. ALIVE: heartbeat within the stale
-- threshold; STALE: not stopped but silent (probably dead, its tasks will
-- become orphans); STOPPED: shut down cleanly.
SELECT id, hostname, pid, status, started_at, last_heartbeat_at, stopped_at,
       total_processed, total_completed, total_failed, total_retries, recovered_orphans,
       extract(epoch FROM now() - last_heartbeat_at)::double precision AS seconds_since_heartbeat,
       CASE WHEN status = 'STOPPED' THEN 'STOPPED'
            WHEN last_heartbeat_at > now() - make_interval(secs => %(stale_after_seconds)s)
                THEN 'ALIVE'
            ELSE 'STALE' END AS state
FROM workers
ORDER BY status = 'STOPPED', last_heartbeat_at DESC
LIMIT %(limit)s;

-- name: worker_totals
-- The fleet: counters summed over every worker that ever ran on this database.
SELECT count(*) AS workers,
       count(*) FILTER (WHERE status <> 'STOPPED' AND last_heartbeat_at
                        > now() - make_interval(secs => %(stale_after_seconds)s)) AS alive,
       count(*) FILTER (WHERE status <> 'STOPPED' AND last_heartbeat_at
                        <= now() - make_interval(secs => %(stale_after_seconds)s)) AS stale,
       COALESCE(sum(total_processed), 0)::bigint   AS total_processed,
       COALESCE(sum(total_completed), 0)::bigint   AS total_completed,
       COALESCE(sum(total_failed), 0)::bigint      AS total_failed,
       COALESCE(sum(total_retries), 0)::bigint     AS total_retries,
       COALESCE(sum(recovered_orphans), 0)::bigint AS recovered_orphans
FROM workers;

-- ---------------------------------------------------------------- chaos

-- name: chaos_get
SELECT enabled AND (expires_at IS NULL OR expires_at > now()) AS active,
       enabled, worker_paused, failure_rate, latency_ms, expires_at, updated_by, updated_at,
       now() AS db_now
FROM chaos_settings
WHERE id = 1;

-- name: chaos_enable
-- Chaos always expires: expires_at is never NULL when enabled from here.
UPDATE chaos_settings SET
    enabled = true,
    worker_paused = %(worker_paused)s,
    failure_rate = %(failure_rate)s,
    latency_ms = %(latency_ms)s,
    expires_at = now() + make_interval(secs => %(ttl_seconds)s),
    updated_by = %(actor)s,
    updated_at = now()
WHERE id = 1
RETURNING enabled AND expires_at > now() AS active,
          enabled, worker_paused, failure_rate, latency_ms, expires_at, updated_by, updated_at,
          now() AS db_now;

-- name: chaos_disable
UPDATE chaos_settings SET
    enabled = false,
    worker_paused = false,
    failure_rate = 0,
    latency_ms = 0,
    expires_at = NULL,
    updated_by = %(actor)s,
    updated_at = now()
WHERE id = 1
RETURNING false AS active,
          enabled, worker_paused, failure_rate, latency_ms, expires_at, updated_by, updated_at,
          now() AS db_now;

-- name: tasks_due_notify
-- Wakes every idle worker at commit (as the triggers do when tasks become
-- due), so a chaos change takes effect at once rather than at the next poll.
SELECT pg_notify('goodfellaz17_tasks_due', %(payload)s);

-- ---------------------------------------------------------------- invariants

-- name: invariant_order_checks
SELECT check_name, expected, actual, passed
FROM v_order_invariants
WHERE order_id = %(order_id)s;

-- name: invariant_global_summary
-- The global check: every invariant of every order not found exact since its
-- row last changed (v_unverified_orders: the open ones, and the finished ones
-- changed since), plus the `recheck` verified orders checked longest ago, so
-- that a task changed with the triggers off is found too, in time. It costs
-- a scan of the orders rows plus what open work and recent changes cost, not
-- what the tasks of history cost. In the same statement the COMPLETED orders
-- that pass are marked verified, each only if its row is still the version
-- the check read (xmin): an order changed meanwhile is checked again next
-- time. At most `max_violations` listed.
WITH candidates AS (
    SELECT id, version, status FROM v_unverified_orders
    UNION
    (SELECT o.id, o.xmin, o.status
       FROM orders o
      WHERE o.verified_xid IS NOT NULL
      ORDER BY o.verified_at
      LIMIT %(recheck)s)
), checks AS (
    SELECT c.id, c.version, c.status, i.check_name, i.expected, i.actual, i.passed
    FROM candidates c
    CROSS JOIN LATERAL (SELECT v.* FROM v_order_invariants v WHERE v.order_id = c.id) i
), per_order AS (
    SELECT id, version, status, bool_and(passed) AS passed
    FROM checks
    GROUP BY id, version, status
), verified AS (
    UPDATE orders o SET verified_at = now(), verified_xid = pg_current_xact_id()::xid
    FROM per_order p
    WHERE o.id = p.id
      AND o.xmin = p.version
      AND p.passed
      AND p.status = 'COMPLETED'
    RETURNING o.id
), unmarked AS (
    -- A verified order that fails now loses its mark.
    UPDATE orders o SET verified_at = NULL, verified_xid = NULL
    FROM per_order p
    WHERE o.id = p.id
      AND NOT p.passed
      AND o.verified_xid IS NOT NULL
    RETURNING o.id
), violations AS (
    SELECT id AS order_id, check_name, expected, actual
    FROM checks
    WHERE NOT passed
)
SELECT (SELECT count(*) FROM per_order) AS orders_checked,
       (SELECT count(*) FROM verified) AS orders_verified,
       (SELECT count(*) FROM unmarked) AS orders_unmarked,
       (SELECT count(*) FROM violations) AS violation_count,
       COALESCE((SELECT jsonb_agg(to_jsonb(v) ORDER BY v.order_id, v.check_name)
                 FROM (SELECT * FROM violations ORDER BY order_id, check_name
                       LIMIT %(max_violations)s) v), '[]'::jsonb) AS violations;

-- name: invariant_log_order
-- Log a single-order check, unless the order's latest check within
-- `dedupe_seconds` had the same outcome: asking again and again (a read key
-- can) adds no row until something changes or the window passes. Returns the
-- time of the check either way (invariant_check_log_order_idx).
WITH latest AS (
    SELECT passed, failed_checks
    FROM invariant_check_log
    WHERE order_id = %(order_id)s
      AND check_timestamp > now() - make_interval(secs => %(dedupe_seconds)s)
    ORDER BY check_timestamp DESC
    LIMIT 1
), logged AS (
    INSERT INTO invariant_check_log (order_id, scope, source, passed, failed_checks, checks,
                                     orders_checked, duration_ms)
    SELECT %(order_id)s, 'ORDER', %(source)s, %(passed)s, %(failed_checks)s, %(checks)s, 1,
           %(duration_ms)s
    WHERE NOT EXISTS (SELECT 1 FROM latest
                      WHERE passed = %(passed)s AND failed_checks = %(failed_checks)s::text[])
)
SELECT now() AS check_timestamp;

-- name: invariant_log_orphans
-- Log an orphan check under its own scope (never GLOBAL: the alerts read
-- GLOBAL), deduplicated like invariant_log_order. The latest rows without an
-- order come first in invariant_check_log_order_idx.
WITH latest AS (
    SELECT passed, failed_checks
    FROM invariant_check_log
    WHERE order_id IS NULL AND scope = 'ORPHANS'
      AND check_timestamp > now() - make_interval(secs => %(dedupe_seconds)s)
    ORDER BY check_timestamp DESC
    LIMIT 1
), logged AS (
    INSERT INTO invariant_check_log (order_id, scope, source, passed, failed_checks, checks,
                                     orders_checked, duration_ms)
    SELECT NULL, 'ORPHANS', %(source)s, %(passed)s, %(failed_checks)s, %(checks)s,
           %(orders_checked)s, %(duration_ms)s
    WHERE NOT EXISTS (SELECT 1 FROM latest
                      WHERE passed = %(passed)s AND failed_checks = %(failed_checks)s::text[])
)
SELECT now() AS check_timestamp;

-- name: invariant_log_global
-- One GLOBAL row, plus one row for each of the first `max_order_rows`
-- violating orders (by id) so that the runbook's per-order query shows
-- global failures too: a failing check writes a bounded number of rows
-- however many orders are broken. `source` says who ran the check.
WITH per_order AS (
    INSERT INTO invariant_check_log (order_id, scope, source, passed, failed_checks, checks,
                                     orders_checked, duration_ms)
    SELECT o.order_id, 'GLOBAL', %(source)s, false, o.failed, o.checks, 1, %(duration_ms)s
    FROM (SELECT (v ->> 'orderId')::uuid AS order_id,
                 array_agg(DISTINCT v ->> 'check') AS failed, jsonb_agg(v) AS checks
          FROM jsonb_array_elements(%(violations)s::jsonb) v
          GROUP BY 1
          ORDER BY 1
          LIMIT %(max_order_rows)s) o
)
INSERT INTO invariant_check_log (order_id, scope, source, passed, failed_checks, checks,
                                 orders_checked, violation_count, duration_ms)
VALUES (NULL, 'GLOBAL', %(source)s, %(passed)s,
        ARRAY(SELECT DISTINCT v ->> 'check' FROM jsonb_array_elements(%(violations)s::jsonb) v),
        %(violations)s::jsonb, %(orders_checked)s, %(violation_count)s, %(duration_ms)s)
RETURNING check_timestamp;

-- name: invariant_global_lock
-- Held by a global check asked for over the API until its transaction ends:
-- concurrent requests wait for it, then reuse its result.
SELECT pg_advisory_xact_lock(%(lock_id)s);

-- name: invariant_global_latest
-- The latest full global check (any source) at most `max_age_seconds` old,
-- or no row (invariant_check_log_global_idx).
SELECT check_timestamp, passed, checks, orders_checked, violation_count, duration_ms, source
FROM invariant_check_log
WHERE scope = 'GLOBAL' AND order_id IS NULL
  AND check_timestamp > now() - make_interval(secs => %(max_age_seconds)s)
ORDER BY check_timestamp DESC
LIMIT 1;

-- name: invariant_orphans
-- Tasks EXECUTING past their lease (their worker died or hung). Only looks:
-- moving them back to the queue is the rescuer's job.
SELECT id, order_id, seq, quantity, attempts, lease_owner, lease_expires_at, started_at,
       node_id,
       extract(epoch FROM now() - lease_expires_at)::double precision AS overdue_seconds,
       count(*) OVER () AS total
FROM order_tasks
WHERE status = 'EXECUTING' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT %(limit)s;

-- name: node_upsert
-- Register a node or reset an existing one to enabled with a new capacity.
INSERT INTO nodes (provider, node_identifier, capacity_per_hour)
VALUES (%(provider)s, %(node_identifier)s, %(capacity_per_hour)s)
ON CONFLICT (provider, node_identifier) DO UPDATE SET
    capacity_per_hour = EXCLUDED.capacity_per_hour,
    enabled = true,
    circuit_state = 'CLOSED',
    consecutive_failures = 0,
    circuit_opened_until = NULL,
    updated_at = now()
RETURNING *;

-- ---------------------------------------------------------------- operator actions

-- name: operator_action_record
INSERT INTO operator_actions (action, order_id, actor, details)
VALUES (%(action)s, %(order_id)s, %(actor)s, %(details)s)
RETURNING id, created_at;

-- ---------------------------------------------------------------- capacity

-- name: capacity_by_backend
-- Per backend (a node's provider is the backend it serves): nodes, healthy
-- capacity, and the open work, in one statement.
WITH node_caps AS (
    SELECT provider AS backend,
           count(*) AS total_nodes,
           count(*) FILTER (WHERE healthy) AS healthy_nodes,
           COALESCE(sum(capacity_per_hour) FILTER (WHERE healthy), 0)::bigint
               AS healthy_units_per_hour
    FROM (SELECT provider, capacity_per_hour,
                 enabled AND (circuit_state <> 'OPEN' OR circuit_opened_until <= now()) AS healthy
          FROM nodes) n
    GROUP BY provider
), backlog AS (
    -- Open tasks carry their order's backend; an open task's order is never
    -- COMPLETED (the triggers close or reopen).
    SELECT t.backend,
           COALESCE(sum(t.quantity) FILTER (WHERE t.status = 'PENDING'), 0)::bigint
               AS pending_units,
           COALESCE(sum(t.quantity) FILTER (WHERE t.status = 'FAILED_RETRYING'), 0)::bigint
               AS retrying_units,
           COALESCE(sum(t.quantity) FILTER (WHERE t.status = 'EXECUTING'), 0)::bigint
               AS executing_units
    FROM order_tasks t
    WHERE t.status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')
    GROUP BY t.backend
)
SELECT COALESCE(n.backend, b.backend) AS backend,
       COALESCE(n.total_nodes, 0) AS total_nodes,
       COALESCE(n.healthy_nodes, 0) AS healthy_nodes,
       COALESCE(n.healthy_units_per_hour, 0) AS healthy_units_per_hour,
       COALESCE(b.pending_units, 0) AS pending_units,
       COALESCE(b.retrying_units, 0) AS retrying_units,
       COALESCE(b.executing_units, 0) AS executing_units
FROM node_caps n
FULL JOIN backlog b ON b.backend = n.backend
ORDER BY 1;

-- ---------------------------------------------------------------- metrics

-- name: metrics_gauges
-- Everything /metrics reads from the database, in one round trip. Each count
-- walks a partial index (index-only where the visibility map allows), so the
-- cost follows the size of each state, not of the table. Pending is the due
-- index (PENDING + FAILED_RETRYING) minus the retry index (FAILED_RETRYING)
-- because neither index holds the status column. The thresholds (5 minutes,
-- 2 and 4 hours) are the contract's alert thresholds. Invariant violations
-- come from the latest full GLOBAL check by the periodic monitor or an
-- operator's CLI (never from one asked for over the API, whatever the key:
-- a read key must not change what an alert sees), never from running the
-- check here.
SELECT
    (SELECT count(*) FROM order_tasks
      WHERE status IN ('PENDING', 'FAILED_RETRYING'))                      AS tasks_waiting,
    (SELECT count(*) FROM order_tasks WHERE status = 'FAILED_RETRYING')   AS tasks_retrying,
    e.tasks_executing,
    e.tasks_executing_over_5m,
    -- The queue an operator works through: dead letters of orders still open.
    -- Those of orders closed on purpose (force-complete, cancel) stay
    -- FAILED_PERMANENT for the record but wait for nobody. Walks the few
    -- open orders (orders_active_idx), then each one's dead letters.
    (SELECT count(*) FROM orders o
       JOIN order_tasks t ON t.order_id = o.id AND t.status = 'FAILED_PERMANENT'
      WHERE o.status IN ('PENDING', 'PROCESSING') AND o.failed_permanent_plays > 0)
                                                                          AS dead_letter_queue,
    (SELECT count(*) FROM workers
      WHERE status <> 'STOPPED'
        AND last_heartbeat_at > now() - make_interval(secs => %(stale_after_seconds)s))
                                                                          AS workers_active,
    p.orders_processing_over_2h,
    p.orders_processing_over_4h,
    i.invariant_violations,
    extract(epoch FROM i.check_timestamp)::double precision               AS invariant_checked_at,
    (SELECT enabled AND (expires_at IS NULL OR expires_at > now())
       FROM chaos_settings WHERE id = 1)                                  AS chaos_active,
    (SELECT count(*) FROM nodes
      WHERE enabled AND (circuit_state <> 'OPEN' OR circuit_opened_until <= now()))
                                                                          AS nodes_healthy,
    (SELECT count(*) FROM nodes)                                          AS nodes_total
FROM (SELECT count(*) AS tasks_executing,
             count(*) FILTER (WHERE started_at < now() - interval '5 minutes')
                 AS tasks_executing_over_5m
        FROM order_tasks WHERE status = 'EXECUTING') e
CROSS JOIN (SELECT count(*) FILTER (WHERE created_at < now() - interval '2 hours')
                       AS orders_processing_over_2h,
                   count(*) FILTER (WHERE created_at < now() - interval '4 hours')
                       AS orders_processing_over_4h
              FROM orders
             WHERE status = 'PROCESSING' AND created_at < now() - interval '2 hours') p
LEFT JOIN LATERAL (
    SELECT check_timestamp,
           CASE WHEN passed THEN 0 ELSE jsonb_array_length(checks) END AS invariant_violations
      FROM invariant_check_log
     WHERE scope = 'GLOBAL' AND order_id IS NULL AND source IN ('MONITOR', 'CLI')
     ORDER BY check_timestamp DESC
     LIMIT 1) i ON true;

-- ---------------------------------------------------------------- console

-- name: console_overview
-- The ops console's overview, one snapshot in one statement. Open task
-- states are counted through their partial indexes (pending = the due index
-- minus the retry index, as in metrics_gauges); COMPLETED is the rest of all
-- tasks (the sum of orders.task_count), so nothing walks the whole history.
-- The delivery rate reads the last minutes of
-- order_tasks_completed_executed_at_idx. The counts are a MATERIALIZED CTE:
-- inlined, each column used twice would run its count twice.
WITH t AS MATERIALIZED (
    SELECT
        (SELECT count(*) FROM order_tasks
          WHERE status IN ('PENDING', 'FAILED_RETRYING'))                    AS waiting,
        (SELECT count(*) FROM order_tasks WHERE status = 'FAILED_RETRYING') AS retrying,
        (SELECT count(*) FROM order_tasks WHERE status = 'EXECUTING')       AS executing,
        (SELECT count(*) FROM order_tasks WHERE status = 'FAILED_PERMANENT') AS dead_letter,
        (SELECT COALESCE(sum(quantity), 0) FROM order_tasks
          WHERE status = 'FAILED_PERMANENT')                                 AS dead_letter_units
)
SELECT t.waiting - t.retrying                                             AS pending,
       t.retrying,
       t.executing,
       t.dead_letter,
       t.dead_letter_units,
       o.tasks_total - t.waiting - t.executing - t.dead_letter            AS completed,
       o.orders_total,
       o.orders_open,
       o.orders_processing_over_2h,
       d.units_last_5m,
       d.units_last_hour,
       w.workers_alive,
       w.workers_stale,
       n.nodes_healthy,
       n.nodes_total,
       i.check_timestamp                                                  AS invariant_checked_at,
       i.passed                                                           AS invariant_passed,
       i.violations                                                       AS invariant_violations,
       now()                                                              AS db_now
FROM t
CROSS JOIN (SELECT COALESCE(sum(task_count), 0)                              AS tasks_total,
                   count(*)                                                  AS orders_total,
                   count(*) FILTER (WHERE status <> 'COMPLETED')             AS orders_open,
                   count(*) FILTER (WHERE status = 'PROCESSING'
                                    AND created_at < now() - interval '2 hours')
                                                                             AS orders_processing_over_2h
              FROM orders) o
CROSS JOIN (SELECT COALESCE(sum(quantity) FILTER (
                       WHERE executed_at > now() - interval '5 minutes'), 0) AS units_last_5m,
                   COALESCE(sum(quantity), 0)                                AS units_last_hour
              FROM order_tasks
             WHERE status = 'COMPLETED' AND executed_at > now() - interval '1 hour') d
CROSS JOIN (SELECT count(*) FILTER (WHERE status <> 'STOPPED' AND last_heartbeat_at
                       > now() - make_interval(secs => %(stale_after_seconds)s)) AS workers_alive,
                   count(*) FILTER (WHERE status <> 'STOPPED' AND last_heartbeat_at
                       <= now() - make_interval(secs => %(stale_after_seconds)s)) AS workers_stale
              FROM workers) w
CROSS JOIN (SELECT count(*) FILTER (WHERE enabled AND (circuit_state <> 'OPEN'
                                    OR circuit_opened_until <= now()))       AS nodes_healthy,
                   count(*)                                                  AS nodes_total
              FROM nodes) n
LEFT JOIN LATERAL (
    -- What the alert sees (as in metrics_gauges): monitor and CLI checks only.
    SELECT check_timestamp, passed,
           CASE WHEN passed THEN 0 ELSE jsonb_array_length(checks) END AS violations
      FROM invariant_check_log
     WHERE scope = 'GLOBAL' AND order_id IS NULL AND source IN ('MONITOR', 'CLI')
     ORDER BY check_timestamp DESC
     LIMIT 1) i ON true;

-- name: task_delivered_per_minute
-- Units delivered (tasks COMPLETED, by executed_at) in each of the last
-- `minutes` minutes, oldest first, the current minute included; a minute
-- without deliveries is 0. A range scan of
-- order_tasks_completed_executed_at_idx.
SELECT m.minute, COALESCE(d.units, 0)::bigint AS units
FROM generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1),
                     date_trunc('minute', now()), interval '1 minute') AS m (minute)
LEFT JOIN (
    SELECT date_trunc('minute', executed_at) AS minute, sum(quantity) AS units
    FROM order_tasks
    WHERE status = 'COMPLETED'
      AND executed_at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
    GROUP BY 1
) d ON d.minute = m.minute
ORDER BY m.minute;

-- name: operator_action_list_for_order
-- The latest operator actions on one order (operator_actions_order_idx).
SELECT id, action, actor, details, created_at
FROM operator_actions
WHERE order_id = %(order_id)s
ORDER BY created_at DESC
LIMIT %(limit)s;

-- ---------------------------------------------------------------- storage (retention)

-- name: storage_leader_lock
-- The maintenance leader: whoever holds this transaction-scoped lock does
-- one maintenance step; the others skip it (any replica can take over).
SELECT pg_try_advisory_xact_lock(%(lock_id)s) AS leader;

-- name: storage_lock_timeout
-- A maintenance step's DDL waits this long for its locks, then gives up (the
-- next run tries again) instead of stalling every query queued behind it.
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: storage_ensure_days
-- The day partitions from `from_day` to `to_day` exist (storage_create_day):
-- made ahead of time, so an order never lands in a DEFAULT partition.
SELECT storage_ensure_days(%(from_day)s::date, %(to_day)s::date) AS created;

-- name: storage_day_list
-- Every day whose partitions exist, oldest first, with what keeps it (NULL:
-- nothing: it may be dropped), and its size.
SELECT d.day, d.created_at, d.archived_at,
       storage_day_blocker(d.day, make_interval(days => %(retention_days)s)) AS blocker,
       COALESCE(pg_total_relation_size(to_regclass('orders_p' || to_char(d.day, 'YYYYMMDD'))), 0)
       + COALESCE(pg_total_relation_size(
             to_regclass('order_tasks_finished_p' || to_char(d.day, 'YYYYMMDD'))), 0) AS bytes
FROM storage_days d
WHERE d.dropped_at IS NULL
ORDER BY d.day;

-- name: storage_drop_day
-- Drops a day's orders and finished tasks (storage_drop_day), but only if
-- nothing keeps it now: the check and the drop are one statement.
SELECT storage_drop_day(%(day)s::date) AS dropped
WHERE storage_day_blocker(%(day)s::date, make_interval(days => %(retention_days)s)) IS NULL
  AND (NOT %(require_archive)s
       OR (SELECT archived_at IS NOT NULL FROM storage_days WHERE day = %(day)s::date));

-- name: storage_day_orders
-- A day's orders with their tasks, for the archive: one row per order, its
-- tasks as a JSON array.
SELECT o.id, o.status, o.quantity, o.delivered, o.failed_permanent_plays, o.target, o.backend,
       o.task_count, o.idempotency_key, o.created_at, o.updated_at, o.started_at,
       o.completed_at, o.verified_at,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                     'id', t.id, 'seq', t.seq, 'quantity', t.quantity, 'status', t.status,
                     'attempts', t.attempts, 'orphanings', t.orphanings,
                     'lastError', t.last_error, 'executedAt', t.executed_at,
                     'nodeId', t.node_id) ORDER BY t.seq)
                 FROM order_tasks t WHERE t.order_id = o.id), '[]'::jsonb) AS tasks
FROM orders o
WHERE o.id >= uuid_v7_floor(%(day)s::date::timestamp AT TIME ZONE 'UTC')
  AND o.id < uuid_v7_floor((%(day)s::date + 1)::timestamp AT TIME ZONE 'UTC')
ORDER BY o.id;

-- name: storage_day_mark_archived
UPDATE storage_days SET archived_at = now() WHERE day = %(day)s::date
RETURNING day;

-- name: storage_purge_default
-- Finished orders older than the retention period that sit in the DEFAULT
-- partitions (those from before storage v2 kept their random ids), at most
-- `limit` a run, with their tasks. A bounded DELETE of a tail that only the
-- upgrade left there; new orders always have a day partition. Deleted from
-- the partitions themselves, past the accounting triggers: the order goes
-- with its tasks.
WITH expired AS (
    SELECT id FROM orders_default
    WHERE status = 'COMPLETED' AND completed_at < now() - make_interval(days => %(retention_days)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), tasks AS (
    DELETE FROM order_tasks_finished_default t USING expired e
    WHERE t.order_id = e.id
    RETURNING 1
), gone AS (
    DELETE FROM orders_default o USING expired e
    WHERE o.id = e.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS orders, (SELECT count(*) FROM tasks) AS tasks;

-- name: storage_purge_logs
-- The small tables' retention, each a bounded DELETE of rows past it:
-- invariant checks, operator actions, idempotency keys, stopped workers.
WITH checks AS (
    DELETE FROM invariant_check_log WHERE id IN (
        SELECT id FROM invariant_check_log
        WHERE check_timestamp < now() - make_interval(days => %(retention_days)s)
        LIMIT %(limit)s)
    RETURNING 1
), actions AS (
    DELETE FROM operator_actions WHERE id IN (
        SELECT id FROM operator_actions
        WHERE created_at < now() - make_interval(days => %(retention_days)s)
        LIMIT %(limit)s)
    RETURNING 1
), keys AS (
    DELETE FROM order_idempotency_keys WHERE (scope, key) IN (
        SELECT scope, key FROM order_idempotency_keys
        WHERE created_at < now() - make_interval(days => %(retention_days)s)
        LIMIT %(limit)s)
    RETURNING 1
), stopped AS (
    DELETE FROM workers WHERE id IN (
        SELECT id FROM workers
        WHERE status = 'STOPPED' AND stopped_at < now() - make_interval(days => %(retention_days)s)
        LIMIT %(limit)s)
    RETURNING 1
)
SELECT (SELECT count(*) FROM checks) AS invariant_checks,
       (SELECT count(*) FROM actions) AS operator_actions,
       (SELECT count(*) FROM keys) AS idempotency_keys,
       (SELECT count(*) FROM stopped) AS workers;

-- ---------------------------------------------------------------- console sessions

-- name: console_session_open
-- A new console session. Expired sessions are swept on the way, so the table
-- holds the live ones plus those that expired since the last login.
WITH swept AS (
    DELETE FROM console_sessions
    WHERE created_at <= now() - make_interval(secs => %(max_seconds)s)
       OR last_seen_at <= now() - make_interval(secs => %(idle_seconds)s)
)
INSERT INTO console_sessions (id_hash, key_binding)
VALUES (%(id_hash)s, %(key_binding)s)
RETURNING created_at;

-- name: console_session_get
-- The key binding of a live session (no row: unknown, logged out, idle too
-- long or past its lifetime). With `touch`, a session last seen more than
-- `touch_after_seconds` ago is marked seen now: an operator's click keeps it
-- alive, a page's auto-refresh (touch false) does not, and a busy operator
-- costs one write a minute, not one per request.
WITH live AS (
    SELECT id_hash, key_binding, last_seen_at
    FROM console_sessions
    WHERE id_hash = %(id_hash)s
      AND created_at > now() - make_interval(secs => %(max_seconds)s)
      AND last_seen_at > now() - make_interval(secs => %(idle_seconds)s)
), touched AS (
    UPDATE console_sessions s SET last_seen_at = now()
    FROM live
    WHERE %(touch)s AND s.id_hash = live.id_hash
      AND live.last_seen_at < now() - make_interval(secs => %(touch_after_seconds)s)
)
SELECT key_binding FROM live;

-- name: console_session_delete
DELETE FROM console_sessions WHERE id_hash = %(id_hash)s;

-- name: console_session_flash_set
UPDATE console_sessions SET flash = %(flash)s WHERE id_hash = %(id_hash)s;

-- name: console_session_flash_take
-- The session's notice for `path`, cleared as it is read: shown once.
UPDATE console_sessions s SET flash = NULL
FROM (SELECT id_hash, flash FROM console_sessions
      WHERE id_hash = %(id_hash)s FOR UPDATE) old
WHERE s.id_hash = old.id_hash AND old.flash ->> 'path' = %(path)s
RETURNING old.flash ->> 'message' AS message;
