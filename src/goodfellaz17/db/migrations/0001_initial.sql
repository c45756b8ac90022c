-- goodfellaz17: the initial schema.
--
-- Accounting lives here, not in application code: orders.delivered and
-- orders.failed_permanent_plays are kept by statement-level triggers on
-- order_tasks, so every writer (the worker, the API, an operator's psql
-- session running the runbook) leaves the counters exact.

CREATE TABLE nodes (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider              text        NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]{0,31}$'),
    node_identifier       text        NOT NULL CHECK (length(node_identifier) BETWEEN 1 AND 200),
    endpoint              text        CHECK (endpoint IS NULL OR length(endpoint) <= 2000),
    capacity_per_hour     integer     NOT NULL DEFAULT 360000 CHECK (capacity_per_hour > 0),
    enabled               boolean     NOT NULL DEFAULT true,
    circuit_state         text        NOT NULL DEFAULT 'CLOSED'
                                      CHECK (circuit_state IN ('CLOSED', 'OPEN', 'HALF_OPEN')),
    consecutive_failures  integer     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    circuit_opened_until  timestamptz,
    total_delivered       bigint      NOT NULL DEFAULT 0,
    total_failures        bigint      NOT NULL DEFAULT 0,
    last_success_at       timestamptz,
    last_failure_at       timestamptz,
    last_error            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, node_identifier)
);

-- The simulated backend works out of the box: the demo needs no set-up.
INSERT INTO nodes (provider, node_identifier, capacity_per_hour)
VALUES ('simulated', 'sim-local-1', 3600000);

CREATE TABLE orders (
    id                      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    status                  text        NOT NULL DEFAULT 'PENDING'
                                        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED')),
    quantity                integer     NOT NULL CHECK (quantity > 0),
    delivered               integer     NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    failed_permanent_plays  integer     NOT NULL DEFAULT 0 CHECK (failed_permanent_plays >= 0),
    target                  text        NOT NULL CHECK (length(target) BETWEEN 1 AND 512),
    backend                 text        NOT NULL CHECK (backend ~ '^[a-z][a-z0-9_-]{0,31}$'),
    task_count              integer     NOT NULL CHECK (task_count > 0),
    idempotency_key         text        UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash            text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz,
    completed_at            timestamptz
);

CREATE INDEX orders_created_at_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_active_idx ON orders (status, created_at)
    WHERE status IN ('PENDING', 'PROCESSING');

-- Every claim takes a new token from this sequence; completions must present it.
CREATE SEQUENCE order_tasks_fencing_token_seq AS bigint;

CREATE TABLE order_tasks (
    id                uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id          uuid             NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    seq               integer          NOT NULL CHECK (seq >= 0),
    quantity          integer          NOT NULL CHECK (quantity > 0),
    status            text             NOT NULL DEFAULT 'PENDING'
                                       CHECK (status IN ('PENDING', 'EXECUTING', 'COMPLETED',
                                                         'FAILED_RETRYING', 'FAILED_PERMANENT')),
    attempts          integer          NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    retry_after       timestamptz,
    last_error        text,
    executed_at       timestamptz,
    -- Fair queueing: a task's place in the queue is its order's arrival time
    -- plus one second per task before it in the order, so a large order
    -- interleaves with orders that arrive after it instead of blocking them.
    queue_position    double precision NOT NULL,
    lease_owner       text,
    lease_expires_at  timestamptz,
    fencing_token     bigint,
    node_id           bigint           REFERENCES nodes (id) ON DELETE SET NULL,
    started_at        timestamptz,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (order_id, seq),
    CHECK (status <> 'EXECUTING' OR (lease_expires_at IS NOT NULL AND fencing_token IS NOT NULL))
);

-- The claim query walks this index in queue order.
CREATE INDEX order_tasks_due_idx ON order_tasks (queue_position)
    INCLUDE (retry_after)
    WHERE status IN ('PENDING', 'FAILED_RETRYING');
-- Orphan rescue and the long-running-task alert.
CREATE INDEX order_tasks_executing_idx ON order_tasks (lease_expires_at)
    WHERE status = 'EXECUTING';
-- The runbook's "recent failures" query.
CREATE INDEX order_tasks_dead_letter_idx ON order_tasks (executed_at DESC)
    WHERE status = 'FAILED_PERMANENT';
-- Earliest retry, so an idle worker wakes when the next backoff ends.
CREATE INDEX order_tasks_retry_after_idx ON order_tasks (retry_after)
    WHERE status = 'FAILED_RETRYING';
-- Per-order aggregates (progress, invariants, runbook SQL).
CREATE INDEX order_tasks_order_status_idx ON order_tasks (order_id, status) INCLUDE (quantity);

CREATE TABLE workers (
    id                 text        PRIMARY KEY,
    hostname           text        NOT NULL,
    pid                integer     NOT NULL,
    status             text        NOT NULL DEFAULT 'RUNNING'
                                   CHECK (status IN ('RUNNING', 'STOPPING', 'STOPPED')),
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at         timestamptz,
    total_processed    bigint      NOT NULL DEFAULT 0,
    total_completed    bigint      NOT NULL DEFAULT 0,
    total_failed       bigint      NOT NULL DEFAULT 0,
    total_retries      bigint      NOT NULL DEFAULT 0,
    recovered_orphans  bigint      NOT NULL DEFAULT 0
);

-- One row: chaos injection applies to every worker sharing this database.
CREATE TABLE chaos_settings (
    id             integer          PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    enabled        boolean          NOT NULL DEFAULT false,
    worker_paused  boolean          NOT NULL DEFAULT false,
    failure_rate   double precision NOT NULL DEFAULT 0 CHECK (failure_rate BETWEEN 0 AND 1),
    latency_ms     integer          NOT NULL DEFAULT 0 CHECK (latency_ms BETWEEN 0 AND 600000),
    expires_at     timestamptz,
    updated_by     text,
    updated_at     timestamptz      NOT NULL DEFAULT now()
);
INSERT INTO chaos_settings (id) VALUES (1);

CREATE TABLE operator_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text        NOT NULL,
    order_id    uuid,
    actor       text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_order_idx ON operator_actions (order_id, created_at DESC);

CREATE TABLE invariant_check_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id         uuid,
    check_timestamp  timestamptz NOT NULL DEFAULT now(),
    scope            text        NOT NULL CHECK (scope IN ('ORDER', 'GLOBAL')),
    passed           boolean     NOT NULL,
    failed_checks    text[]      NOT NULL DEFAULT '{}',
    checks           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    orders_checked   integer     NOT NULL DEFAULT 0,
    duration_ms      double precision
);
CREATE INDEX invariant_check_log_order_idx ON invariant_check_log (order_id, check_timestamp DESC);
CREATE INDEX invariant_check_log_time_idx ON invariant_check_log (check_timestamp DESC);


-- ---------------------------------------------------------------------------
-- Accounting triggers.
--
-- Statement-level with transition tables: a statement that changes N tasks
-- costs one aggregate over its own rows and one UPDATE of the orders it
-- touched, whatever N is. Orders rows are locked in id order first so that
-- concurrent batches touching the same orders cannot deadlock.
-- ---------------------------------------------------------------------------

-- One signed row per task version: +quantity for the new version, -quantity
-- for the old one, so summing per order and status gives the deltas.
CREATE TYPE task_change AS (order_id uuid, quantity bigint, status text);

CREATE FUNCTION order_tasks_apply_changes(changes task_change[], due_count bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(changes) > 0 THEN
        PERFORM 1 FROM orders o
        WHERE o.id IN (SELECT DISTINCT c.order_id FROM unnest(changes) c)
        ORDER BY o.id
        FOR NO KEY UPDATE;

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

    IF due_count > 0 THEN
        -- Delivered at commit; wakes idle workers at once instead of at their next poll.
        PERFORM pg_notify('goodfellaz17_tasks_due', due_count::text);
    END IF;
END;
$$;

CREATE FUNCTION order_task_is_due(status text, retry_after timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT status IN ('PENDING', 'FAILED_RETRYING') AND (retry_after IS NULL OR retry_after <= now())
$$;

CREATE FUNCTION order_tasks_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_apply_changes(
        ARRAY(SELECT ROW(n.order_id, n.quantity, n.status)::task_change
              FROM new_rows n WHERE n.status <> 'PENDING'),
        (SELECT count(*) FROM new_rows n WHERE order_task_is_due(n.status, n.retry_after)));
    RETURN NULL;
END;
$$;

CREATE FUNCTION order_tasks_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_apply_changes(
        ARRAY(SELECT ROW(n.order_id, n.quantity, n.status)::task_change
                FROM new_rows n JOIN old_rows o ON o.id = n.id
               WHERE n.status <> o.status OR n.quantity <> o.quantity OR n.order_id <> o.order_id
              UNION ALL
              SELECT ROW(o.order_id, -o.quantity, o.status)::task_change
                FROM new_rows n JOIN old_rows o ON o.id = n.id
               WHERE n.status <> o.status OR n.quantity <> o.quantity OR n.order_id <> o.order_id),
        (SELECT count(*) FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE order_task_is_due(n.status, n.retry_after)
            AND NOT order_task_is_due(o.status, o.retry_after)));
    RETURN NULL;
END;
$$;

CREATE FUNCTION order_tasks_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_apply_changes(
        ARRAY(SELECT ROW(o.order_id, -o.quantity, o.status)::task_change
              FROM old_rows o WHERE o.status <> 'PENDING'),
        0);
    RETURN NULL;
END;
$$;

CREATE TRIGGER order_tasks_account_insert AFTER INSERT ON order_tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION order_tasks_after_insert();
CREATE TRIGGER order_tasks_account_update AFTER UPDATE ON order_tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION order_tasks_after_update();
CREATE TRIGGER order_tasks_account_delete AFTER DELETE ON order_tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION order_tasks_after_delete();

-- An order marked COMPLETED by hand (the runbook's force-complete) while
-- tasks are still open: those tasks go to the dead-letter queue, saying why,
-- so a COMPLETED order never has open tasks and its counters stay exact.
CREATE FUNCTION orders_after_complete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE order_tasks
       SET status = 'FAILED_PERMANENT',
           last_error = 'cancelled: order ' || NEW.id || ' was completed by an operator',
           executed_at = now(),
           retry_after = NULL,
           lease_expires_at = NULL
     WHERE order_id = NEW.id
       AND status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING');
    RETURN NULL;
END;
$$;

CREATE TRIGGER orders_complete_closes_tasks AFTER UPDATE OF status ON orders
    FOR EACH ROW
    WHEN (NEW.status = 'COMPLETED' AND OLD.status <> 'COMPLETED' AND NEW.delivered < NEW.quantity)
    EXECUTE FUNCTION orders_after_complete();


-- ---------------------------------------------------------------------------
-- Invariants: the one definition, shared by the API, the CLI, the metrics
-- and the tests. Set-based: one aggregate over order_tasks answers for every
-- order at once; filtered by order_id it becomes an index lookup.
-- ---------------------------------------------------------------------------

CREATE VIEW v_order_invariants AS
WITH per_order AS (
    SELECT o.id AS order_id, o.status, o.quantity, o.delivered, o.failed_permanent_plays,
           COALESCE(t.task_sum, 0)       AS task_sum,
           COALESCE(t.completed_sum, 0)  AS completed_sum,
           COALESCE(t.dead_sum, 0)       AS dead_sum,
           COALESCE(t.task_count, 0)     AS task_count,
           COALESCE(t.completed_count, 0) AS completed_count,
           COALESCE(t.open_count, 0)     AS open_count,
           COALESCE(t.expired_count, 0)  AS expired_count
    FROM orders o
    LEFT JOIN (
        SELECT order_id,
               SUM(quantity)                                                    AS task_sum,
               SUM(quantity) FILTER (WHERE status = 'COMPLETED')                AS completed_sum,
               SUM(quantity) FILTER (WHERE status = 'FAILED_PERMANENT')         AS dead_sum,
               COUNT(*)                                                         AS task_count,
               COUNT(*) FILTER (WHERE status = 'COMPLETED')                     AS completed_count,
               COUNT(*) FILTER (WHERE status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')) AS open_count,
               COUNT(*) FILTER (WHERE status = 'EXECUTING' AND lease_expires_at < now()) AS expired_count
        FROM order_tasks
        GROUP BY order_id
    ) t ON t.order_id = o.id
)
SELECT p.order_id, c.check_name, c.expected, c.actual, c.passed
FROM per_order p
CROSS JOIN LATERAL (VALUES
    ('task_quantities_sum_to_order_quantity', p.quantity::bigint, p.task_sum::bigint,
        p.task_sum = p.quantity),
    ('delivered_equals_completed_tasks', p.completed_sum::bigint, p.delivered::bigint,
        p.delivered = p.completed_sum),
    ('failed_permanent_plays_equals_dead_letter_tasks', p.dead_sum::bigint, p.failed_permanent_plays::bigint,
        p.failed_permanent_plays = p.dead_sum),
    ('delivered_within_quantity', p.quantity::bigint, p.delivered::bigint,
        p.delivered BETWEEN 0 AND p.quantity),
    ('completed_order_has_no_open_tasks', 0::bigint,
        CASE WHEN p.status = 'COMPLETED' THEN p.open_count ELSE 0 END::bigint,
        p.status <> 'COMPLETED' OR p.open_count = 0),
    ('completed_order_delivered_is_quantity_minus_dead_letters',
        CASE WHEN p.status = 'COMPLETED' THEN p.quantity - p.failed_permanent_plays ELSE p.delivered END::bigint,
        p.delivered::bigint,
        p.status <> 'COMPLETED' OR p.delivered = p.quantity - p.failed_permanent_plays),
    ('all_tasks_completed_means_order_completed', p.task_count::bigint, p.completed_count::bigint,
        p.status = 'COMPLETED' OR p.task_count = 0 OR p.completed_count < p.task_count),
    ('no_task_executing_past_its_lease', 0::bigint, p.expired_count::bigint,
        p.expired_count = 0)
) AS c (check_name, expected, actual, passed);

CREATE VIEW v_invariant_health AS
SELECT
    (SELECT count(*) FROM invariant_check_log
      WHERE check_timestamp > now() - interval '24 hours')                  AS checks_last_24h,
    (SELECT count(*) FROM invariant_check_log
      WHERE check_timestamp > now() - interval '24 hours' AND NOT passed)   AS failures_last_24h,
    (SELECT max(check_timestamp) FROM invariant_check_log)                  AS last_check_at,
    (SELECT max(check_timestamp) FROM invariant_check_log WHERE NOT passed) AS last_failure_at,
    v.orders_currently_violating,
    (SELECT count(*) FROM orders)                                           AS orders_total,
    CASE WHEN v.orders_currently_violating = 0 THEN 'HEALTHY' ELSE 'VIOLATED' END AS status
FROM (SELECT count(DISTINCT order_id) AS orders_currently_violating
        FROM v_order_invariants WHERE NOT passed) v;
