-- Two clean-ups; the behaviour is unchanged.
--
-- 1. order_tasks_apply_changes loses its due_count argument and the NOTIFY
--    behind it. Since 0004 the notification is sent by order_tasks_account
--    (with the smallest due queue position as payload), which passed 0, so
--    that branch never ran. The only caller, order_tasks_account, now calls
--    the one-argument function. The body is 0007's otherwise.
--
-- 2. order_task_position takes the run length as an argument instead of a
--    literal 10. An order's tasks are queued in runs of ten so that a claim
--    of the default batch (GOODFELLAZ17_WORKER_BATCH_SIZE = 10) usually
--    touches one or two orders; the two numbers are one policy, which now
--    has one name: RUN_LENGTH in domain/queue.py, passed in by order_create,
--    and the batch size's default. The DEFAULT 10 is for callers of the
--    four-argument form (the previous release, still serving during a
--    rolling upgrade), so they place tasks exactly where the new one does.
--
-- Every other function is still called: order_tasks_account and
-- order_task_is_due by the accounting triggers, order_queue_start and
-- order_task_position by order_create, orders_after_complete by its trigger,
-- task_claim_batch and task_record_outcomes by the worker.

CREATE FUNCTION order_tasks_apply_changes(changes task_change[])
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
END;
$$;

CREATE OR REPLACE FUNCTION order_tasks_account(changes task_change[], first_due_position double precision)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_apply_changes(changes);
    IF first_due_position IS NOT NULL THEN
        -- Delivered at commit; wakes idle workers at once instead of at their
        -- next poll. Several in one transaction with the same payload fold
        -- into one.
        PERFORM pg_notify('goodfellaz17_tasks_due', first_due_position::text);
    END IF;
END;
$$;

DROP FUNCTION order_tasks_apply_changes(task_change[], bigint);

DROP FUNCTION order_task_position(double precision, uuid, integer, double precision);

CREATE FUNCTION order_task_position(start double precision, order_id uuid, seq integer,
                                    fair_share double precision, run_length integer DEFAULT 10)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT start
         + (seq / run_length) * run_length * fair_share
         + ((hashtext(order_id::text) & 1023) * run_length + seq % run_length) * fair_share / 1024
$$;
