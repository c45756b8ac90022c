-- The accounting triggers lock and update an order only when something about
-- it changes: its counters (a task entered or left COMPLETED or
-- FAILED_PERMANENT), its first start (PENDING -> PROCESSING), or its reopening
-- (a task of a COMPLETED order open again).
--
-- Most statements change none of these: a claim moves tasks PENDING ->
-- EXECUTING of orders already PROCESSING, a failure EXECUTING ->
-- FAILED_RETRYING. Before, every such statement still locked its orders'
-- rows, so concurrent claimers queued behind each other's commits on hot
-- orders. Now they touch no order at all.
--
-- Reading orders.status without a lock to decide is safe: the only
-- transitions with no counter change that need an order update are
-- PENDING -> PROCESSING (an order never goes back to PENDING) and reopening a
-- COMPLETED order (which has no open task, so only a task leaving COMPLETED
-- or FAILED_PERMANENT can reopen it, and that changes a counter). The UPDATE
-- re-checks every condition on the locked row.
--
-- The update trigger also reads the transition tables once instead of three
-- times.

CREATE OR REPLACE FUNCTION order_tasks_apply_changes(changes task_change[], due_count bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    touched uuid[];
BEGIN
    IF cardinality(changes) > 0 THEN
        WITH d AS (
            SELECT c.order_id,
                   COALESCE(SUM(c.quantity) FILTER (WHERE c.status = 'COMPLETED'), 0)        AS d_delivered,
                   COALESCE(SUM(c.quantity) FILTER (WHERE c.status = 'FAILED_PERMANENT'), 0) AS d_dead,
                   COALESCE(bool_or(c.quantity > 0 AND c.status <> 'PENDING'), false)        AS started,
                   COALESCE(bool_or(c.quantity > 0
                            AND c.status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')), false) AS active
            FROM unnest(changes) c
            GROUP BY c.order_id
        )
        SELECT array_agg(d.order_id ORDER BY d.order_id) INTO touched
        FROM d JOIN orders o ON o.id = d.order_id
        WHERE d.d_delivered <> 0 OR d.d_dead <> 0
           OR (d.started AND o.status = 'PENDING')
           OR (d.active AND o.status = 'COMPLETED');

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
        -- Delivered at commit; wakes idle workers at once instead of at their next poll.
        PERFORM pg_notify('goodfellaz17_tasks_due', due_count::text);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION order_tasks_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes task_change[];
    due_count bigint;
BEGIN
    SELECT COALESCE(array_agg(v.change) FILTER (WHERE v.change IS NOT NULL), '{}'),
           COALESCE(max(p.due), 0)
      INTO changes, due_count
      FROM (
          SELECT n.order_id AS n_order, n.quantity AS n_qty, n.status AS n_status,
                 o.order_id AS o_order, o.quantity AS o_qty, o.status AS o_status,
                 (n.status <> o.status OR n.quantity <> o.quantity
                  OR n.order_id <> o.order_id) AS changed,
                 count(*) FILTER (WHERE order_task_is_due(n.status, n.retry_after)
                                    AND NOT order_task_is_due(o.status, o.retry_after))
                     OVER () AS due
            FROM new_rows n JOIN old_rows o ON o.id = n.id
      ) p
      CROSS JOIN LATERAL (VALUES
          (CASE WHEN p.changed THEN ROW(p.n_order, p.n_qty, p.n_status)::task_change END),
          (CASE WHEN p.changed THEN ROW(p.o_order, -p.o_qty, p.o_status)::task_change END)
      ) AS v (change);
    PERFORM order_tasks_apply_changes(changes, due_count);
    RETURN NULL;
END;
$$;
