-- A claim writes its tasks and nothing else: no lock on a row that every
-- worker shares, and no walk through an order's old versions.
--
-- 1. order_tasks.node_id loses its foreign key. The key check took a KEY
--    SHARE lock on the node's row for every claimed task: all workers on one
--    node locked the same row many times a second (a multixact per overlap).
--    Nodes are never deleted by the service (DELETE disables them), and
--    node_id only records where a task went; readers LEFT JOIN nodes.
--
-- 2. Deciding whether a claim starts an order (PENDING -> PROCESSING) reads
--    a partial index of the PENDING orders only, instead of each order's row:
--    under a long-open snapshot an order's row carries a version per
--    completion statement, all of which a lookup walks.
--
-- 3. A COMPLETED order can only be reopened by a task leaving COMPLETED or
--    FAILED_PERMANENT (it has no open task), which changes a counter, so that
--    check is made on the locked row by the UPDATE and no longer beforehand.

ALTER TABLE order_tasks DROP CONSTRAINT IF EXISTS order_tasks_node_id_fkey;

CREATE INDEX orders_pending_idx ON orders (id) WHERE status = 'PENDING';

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
                   COALESCE(bool_or(c.quantity > 0 AND c.status <> 'PENDING'), false)        AS started
            FROM unnest(changes) c
            GROUP BY c.order_id
        )
        SELECT array_agg(d.order_id ORDER BY d.order_id) INTO touched
        FROM d
        WHERE d.d_delivered <> 0 OR d.d_dead <> 0
           OR (d.started AND EXISTS (SELECT 1 FROM orders o
                                      WHERE o.id = d.order_id AND o.status = 'PENDING'));

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
