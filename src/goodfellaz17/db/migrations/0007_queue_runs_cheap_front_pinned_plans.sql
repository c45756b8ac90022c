-- Five changes that keep the cost of the queue flat while a long transaction
-- elsewhere holds back cleanup (bench: "60 s open transaction elsewhere"),
-- and keep the hot statements' plans from following misleading statistics:
-- where a new order's tasks sit in the queue (1, 2) and plans pinned to one
-- index probe per row (3, 4, 5).
--
-- 1. Runs of ten. A task's position used to be its order's start plus one
--    second per task ahead of it, so orders started together interleaved
--    task by task: a claim of ten tasks touched ten orders, and the
--    completion of those ten updated ten order rows. Every order row then
--    took one new version per task; under an old snapshot none of them can
--    be pruned and every lookup of the order walks them all.
--    Now an order's tasks come in runs of ten (the default claim batch): run
--    k starts k x 10 fair shares after the order's start, and within a round
--    each order has its own slot (from a hash of its id) in which its run's
--    tasks follow each other. A claim of ten usually touches one or two
--    orders. Fairness is kept per round: a new order waits at most one run
--    of each order ahead of it, never behind a whole big order.
--
-- 2. The queue's front without a walk from the queue's head. order_queue_start
--    looked for the smallest waiting position by reading the due index from
--    its start, over an entry for every task claimed since the oldest open
--    snapshot (such entries cannot be cleaned up while it is open): each new
--    order cost a walk over the whole backlog already worked through. The
--    search now starts where the claimers are: the furthest position among
--    the last completions (a short backward read of the index of completed
--    tasks, whose rows never change again). Waiting tasks behind that point
--    are retries and rescued work, which the claimers go back for anyway.

CREATE FUNCTION order_task_position(start double precision, order_id uuid, seq integer,
                                    fair_share double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT start
         + (seq / 10) * 10 * fair_share
         + ((hashtext(order_id::text) & 1023) * 10 + seq % 10) * fair_share / 1024
$$;

CREATE OR REPLACE FUNCTION order_queue_start(arrival timestamptz) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT GREATEST(
        extract(epoch FROM arrival)::double precision,
        (SELECT t.queue_position
           FROM order_tasks t
          WHERE t.status IN ('PENDING', 'FAILED_RETRYING')
            AND t.queue_position >= (
                SELECT COALESCE(max(c.queue_position), '-Infinity')
                FROM (SELECT queue_position
                        FROM order_tasks
                       WHERE status = 'COMPLETED'
                       ORDER BY executed_at DESC
                       LIMIT 16) c)
          ORDER BY t.queue_position
          LIMIT 1))
$$;

-- 3. The accounting's plans do not depend on the statistics. The trigger
--    touches a handful of orders by primary key; with the statistics of a
--    young or freshly vacuumed orders table (a few pages) the planner
--    preferred a sequential scan of orders, and the cached plan kept it while
--    the table grew (under an old snapshot, with every dead version). The
--    function now plans without sequential, bitmap, hash or merge scans of
--    orders, and checks "is this order still PENDING" with one primary-key
--    probe per order: OFFSET 0 keeps that check a per-order subplan rather
--    than a join over every PENDING order, and `IS TRUE` keeps the status
--    out of the index condition (with young statistics the planner otherwise
--    walked the index on (status, created_at) through every PENDING order for
--    each probe). Since orders are queued in runs (1), an order's row carries
--    a few versions, not one per task, so the probe stays short under an old
--    snapshot. The body is the one of migration 0006 otherwise.

CREATE OR REPLACE FUNCTION order_tasks_apply_changes(changes task_change[], due_count bigint)
RETURNS void LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    touched uuid[];
BEGIN
    IF cardinality(changes) > 0 THEN
        WITH d AS (
            SELECT c.order_id,
                   COALESCE(SUM(c.quantity) FILTER (WHERE c.status = 'COMPLETED'), 0)        AS d_delivered,
                   COALESCE(SUM(c.quantity) FILTER (WHERE c.status = 'FAILED_PERMANENT'), 0) AS d_dead,
                   COALESCE(bool_or(c.quantity > 0 AND c.status <> 'PENDING'), false)        AS started
            FROM unnest(changes) c
            GROUP BY c.order_id
        )
        SELECT array_agg(d.order_id ORDER BY d.order_id) INTO touched
        FROM d
        WHERE d.d_delivered <> 0 OR d.d_dead <> 0
           OR (d.started AND EXISTS (SELECT 1 FROM orders o
                                      WHERE o.id = d.order_id
                                        AND (o.status = 'PENDING') IS TRUE
                                      OFFSET 0));

        IF touched IS NOT NULL THEN
            -- Lock in id order: concurrent batches touching the same orders
            -- cannot deadlock.
            PERFORM 1 FROM orders o WHERE o.id = ANY (touched) ORDER BY o.id FOR NO KEY UPDATE;

            WITH d AS (
                SELECT c.order_id,
                       COALESCE(SUM(c.quantity) FILTER (WHERE c.status = 'COMPLETED'), 0)        AS d_delivered,
                       COALESCE(SUM(c.quantity) FILTER (WHERE c.status = 'FAILED_PERMANENT'), 0) AS d_dead,
                       COALESCE(bool_or(c.quantity > 0 AND c.status <> 'PENDING'), false)        AS started,
                       COALESCE(bool_or(c.quantity > 0
                                AND c.status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')), false) AS active
                FROM unnest(changes) c
                WHERE c.order_id = ANY (touched)
                GROUP BY c.order_id
            )
            UPDATE orders o SET
                delivered = o.delivered + d.d_delivered,
                failed_permanent_plays = o.failed_permanent_plays + d.d_dead,
                status = CASE
                    WHEN o.delivered + d.d_delivered = o.quantity THEN 'COMPLETED'
                    WHEN o.status = 'COMPLETED' AND d.active THEN 'PROCESSING'
                    WHEN o.status = 'PENDING' AND d.started THEN 'PROCESSING'
                    ELSE o.status END,
                started_at = CASE WHEN d.started THEN COALESCE(o.started_at, now()) ELSE o.started_at END,
                completed_at = CASE
                    WHEN o.delivered + d.d_delivered = o.quantity THEN COALESCE(o.completed_at, now())
                    WHEN o.status = 'COMPLETED' AND d.active THEN NULL
                    ELSE o.completed_at END,
                updated_at = now()
            FROM d
            WHERE o.id = d.order_id
              AND (d.d_delivered <> 0 OR d.d_dead <> 0
                   OR (d.started AND o.status = 'PENDING')
                   OR (d.active AND o.status = 'COMPLETED'));
        END IF;
    END IF;

    IF due_count > 0 THEN
        PERFORM pg_notify('goodfellaz17_tasks_due', due_count::text);
    END IF;
END;
$$;

-- 4. The claim's plan does not depend on the statistics either. Its shape was
--    already fixed (the queue index read in order from the claimer's place,
--    the order looked up per task), but with the statistics of a small or
--    freshly vacuumed table the planner looked orders up by sequential scan,
--    or read every due task by bitmap and sorted them, and a prepared plan
--    kept that shape as the tables grew. The statement moves, unchanged, into
--    a function planned without sequential or bitmap scans; the worker and
--    the benchmark's pgbench cycle call it (queries.sql: task_claim_batch).

CREATE FUNCTION task_claim_batch(p_worker_id text, p_limit integer, p_lease_seconds double precision,
                                 p_from_position double precision, p_node_offset integer)
RETURNS TABLE (id uuid, order_id uuid, seq integer, quantity integer, attempts integer,
               fencing_token bigint, queue_position double precision, target text, backend text,
               node_id bigint, node_identifier text, endpoint text, capacity_per_hour integer)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH healthy AS (
        SELECT provider, array_agg(id ORDER BY id) AS node_ids
        FROM nodes
        WHERE enabled
          AND (circuit_state <> 'OPEN' OR circuit_opened_until <= now())
        GROUP BY provider
    ), due AS (
        -- The order is looked up per task in queue order (the OFFSET 0 keeps the
        -- planner from turning this into a join over every waiting task and a
        -- sort): whatever the statistics say, a claim reads the queue index from
        -- its position and stops after `limit` tasks.
        SELECT t.id, o.target, o.backend
        FROM order_tasks t
        CROSS JOIN LATERAL (
            SELECT o.target, o.backend FROM orders o
            WHERE o.id = t.order_id AND o.status <> 'COMPLETED'
            OFFSET 0
        ) o
        WHERE t.status IN ('PENDING', 'FAILED_RETRYING')
          AND (t.retry_after IS NULL OR t.retry_after <= now())
          AND t.queue_position >= p_from_position
          AND o.backend IN (SELECT provider FROM healthy)
          AND NOT EXISTS (
              SELECT 1 FROM chaos_settings c
              WHERE c.enabled AND c.worker_paused AND (c.expires_at IS NULL OR c.expires_at > now()))
        ORDER BY t.queue_position
        LIMIT p_limit
        FOR UPDATE OF t SKIP LOCKED
    ), assigned AS (
        SELECT d.id, d.target, d.backend,
               h.node_ids[1 + ((row_number() OVER () + p_node_offset) % cardinality(h.node_ids))]
                   AS node_id
        FROM due d
        JOIN healthy h ON h.provider = d.backend
    )
    UPDATE order_tasks t SET
        status = 'EXECUTING',
        attempts = t.attempts + 1,
        lease_owner = p_worker_id,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        fencing_token = nextval('order_tasks_fencing_token_seq'),
        node_id = a.node_id,
        started_at = now()
    FROM assigned a
    JOIN nodes n ON n.id = a.node_id
    WHERE t.id = a.id
    RETURNING t.id, t.order_id, t.seq, t.quantity, t.attempts, t.fencing_token, t.queue_position,
              a.target, a.backend, n.id AS node_id, n.node_identifier, n.endpoint,
              n.capacity_per_hour;
END;
$$;

-- 5. The same for recording outcomes. After an ANALYZE (autovacuum runs one
--    within the minute) the planner answered "these ten tasks by id and
--    token" by reading the whole partial index of EXECUTING tasks and hashing
--    it: cheap while that index is small, but under an old snapshot it keeps
--    an entry for every task that has passed through EXECUTING since, so each
--    completion got slower than the last. The statement moves into a
--    function planned with one primary-key probe per task; its status guard
--    is written `(status = 'EXECUTING') IS TRUE` so that the partial index
--    cannot serve it at all (with a few executing tasks in the statistics,
--    even with hash and merge joins off, the planner read that whole index
--    into a nested loop for each statement).

CREATE FUNCTION task_record_outcomes(p_done_ids uuid[], p_done_tokens bigint[],
                                     p_failed_ids uuid[], p_failed_tokens bigint[],
                                     p_errors text[], p_permanent boolean[],
                                     p_delays double precision[], p_max_attempts integer)
RETURNS TABLE (id uuid, order_id uuid, status text, attempts integer, quantity integer)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH completed AS (
        UPDATE order_tasks t SET
            status = 'COMPLETED',
            executed_at = now()
        FROM unnest(p_done_ids, p_done_tokens) AS c (id, token)
        WHERE t.id = c.id
          AND t.fencing_token = c.token
          AND (t.status = 'EXECUTING') IS TRUE
        RETURNING t.id, t.order_id, t.status, t.attempts, t.quantity
    ), failed AS (
        UPDATE order_tasks t SET
            status = CASE WHEN f.permanent OR t.attempts >= p_max_attempts
                          THEN 'FAILED_PERMANENT' ELSE 'FAILED_RETRYING' END,
            retry_after = CASE WHEN f.permanent OR t.attempts >= p_max_attempts
                               THEN NULL ELSE now() + make_interval(secs => f.delay) END,
            queue_position = CASE WHEN f.permanent OR t.attempts >= p_max_attempts
                                  THEN t.queue_position
                                  ELSE extract(epoch FROM now()) + f.delay END,
            last_error = f.error,
            executed_at = now()
        FROM unnest(p_failed_ids, p_failed_tokens, p_errors,
                    p_permanent, p_delays)
             AS f (id, token, error, permanent, delay)
        WHERE t.id = f.id
          AND t.fencing_token = f.token
          AND (t.status = 'EXECUTING') IS TRUE
        RETURNING t.id, t.order_id, t.status, t.attempts, t.quantity
    )
    SELECT * FROM completed
    UNION ALL
    SELECT * FROM failed;
END;
$$;
