-- The "tasks due" notification says where in the queue the new work is: its
-- payload is the smallest queue_position among the tasks that became due
-- (a new order, a drain, a retry-now, a hand-back).
--
-- Each claimer walks the queue from where it left off, so the index entries
-- that claimed tasks leave at the head of the queue (which vacuum cannot
-- remove while some session holds an old snapshot) are not walked again on
-- every claim. A notification used to send every claimer back to the head;
-- with orders arriving all the time that was a walk over every dead entry on
-- nearly every claim. Now a claimer steps back only as far as the new work.

CREATE FUNCTION order_tasks_account(changes task_change[], first_due_position double precision)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- The counters and statuses: unchanged (order_tasks_apply_changes, 0003).
    PERFORM order_tasks_apply_changes(changes, 0);
    IF first_due_position IS NOT NULL THEN
        -- Delivered at commit; wakes idle workers at once instead of at their
        -- next poll. Several in one transaction with the same payload fold
        -- into one.
        PERFORM pg_notify('goodfellaz17_tasks_due', first_due_position::text);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION order_tasks_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_account(
        ARRAY(SELECT ROW(n.order_id, n.quantity, n.status)::task_change
              FROM new_rows n WHERE n.status <> 'PENDING'),
        (SELECT min(n.queue_position) FROM new_rows n
          WHERE order_task_is_due(n.status, n.retry_after)));
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION order_tasks_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes task_change[];
    first_due double precision;
BEGIN
    SELECT COALESCE(array_agg(v.change) FILTER (WHERE v.change IS NOT NULL), '{}'),
           min(p.first_due)
      INTO changes, first_due
      FROM (
          SELECT n.order_id AS n_order, n.quantity AS n_qty, n.status AS n_status,
                 o.order_id AS o_order, o.quantity AS o_qty, o.status AS o_status,
                 (n.status <> o.status OR n.quantity <> o.quantity
                  OR n.order_id <> o.order_id) AS changed,
                 min(n.queue_position) FILTER (WHERE order_task_is_due(n.status, n.retry_after)
                                                 AND NOT order_task_is_due(o.status, o.retry_after))
                     OVER () AS first_due
            FROM new_rows n JOIN old_rows o ON o.id = n.id
      ) p
      CROSS JOIN LATERAL (VALUES
          (CASE WHEN p.changed THEN ROW(p.n_order, p.n_qty, p.n_status)::task_change END),
          (CASE WHEN p.changed THEN ROW(p.o_order, -p.o_qty, p.o_status)::task_change END)
      ) AS v (change);
    PERFORM order_tasks_account(changes, first_due);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION order_tasks_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_account(
        ARRAY(SELECT ROW(o.order_id, -o.quantity, o.status)::task_change
              FROM old_rows o WHERE o.status <> 'PENDING'),
        NULL);
    RETURN NULL;
END;
$$;
