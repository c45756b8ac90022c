-- goodfellaz17: the whole current schema, in one file.
--
-- This is today's truth, to be read; migrations/ is how a database gets
-- here, to be run. The service never applies this file: `goodfellaz17
-- migrate` applies the migrations, which are history and never change once
-- committed (tests/integration/test_schema_file.py builds one database from
-- each and fails, with the diff, when their pg_dump --schema-only or their
-- seed rows differ). A schema change is therefore two edits: a new
-- migration, and the same change here.
--
-- Contents, by subject:
--   1. orders
--   2. tasks and the queue: the table, its indexes, where a task sits in the
--      queue, the claim and the outcome write (the worker's hot path)
--   3. accounting: triggers that keep orders' counters and status exact
--   4. nodes (delivery capacity, circuit breaker)
--   5. workers
--   6. chaos injection
--   7. operator actions
--   8. invariants: the check log and the one definition of the invariants
--   9. console sessions
--
-- The hot statements (task_claim_batch, task_record_outcomes,
-- order_tasks_apply_changes) are functions planned without sequential or
-- bitmap scans, so their plans are one index probe per row whatever the
-- statistics say; tests/integration/test_plans.py EXPLAINs them.


-- ===========================================================================
-- 1. Orders
-- ===========================================================================

-- delivered and failed_permanent_plays are never written by application code:
-- the accounting triggers (3) keep them, and the order's status, from its
-- tasks.
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
    idempotency_key         text        CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash            text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz,
    completed_at            timestamptz,
    -- Idempotency keys belong to whoever used them (migration 0010): the
    -- calling API key's fingerprint (`key:<32 hex>`), `cli` for the command
    -- line, `legacy` for keys from before scopes (every caller matches those).
    idempotency_scope       text        CHECK (length(idempotency_scope) BETWEEN 1 AND 200),
    CONSTRAINT orders_idempotency_scope_present
        CHECK ((idempotency_key IS NULL) = (idempotency_scope IS NULL)),
    CONSTRAINT orders_idempotency_scope_key_key UNIQUE (idempotency_scope, idempotency_key)
);

-- Listing, newest first (order_list's keyset pagination).
CREATE INDEX orders_created_at_idx ON orders (created_at DESC, id DESC);
-- Open orders: the runbook's stuck-orders query, the metrics, the console.
CREATE INDEX orders_active_idx ON orders (status, created_at)
    WHERE status IN ('PENDING', 'PROCESSING');
-- "Does this claim start the order?" reads this index, never the order's row
-- (which, under a long-open snapshot, carries a version per completion).
CREATE INDEX orders_pending_idx ON orders (id) WHERE status = 'PENDING';


-- ===========================================================================
-- 2. Tasks and the queue
-- ===========================================================================

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
    -- Delivery attempts: claims that ended in a failure or are in flight.
    attempts          integer          NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    retry_after       timestamptz,
    last_error        text,
    executed_at       timestamptz,
    -- The task's place in the fair queue (order_task_position below); a
    -- retry's is now + its backoff.
    queue_position    double precision NOT NULL,
    lease_owner       text,
    lease_expires_at  timestamptz,
    fencing_token     bigint,
    -- Where the task went. No foreign key: the key check locked the node's
    -- row (shared by every worker on it) for each claimed task. Nodes are
    -- never deleted (DELETE disables them); readers LEFT JOIN nodes.
    node_id           bigint,
    started_at        timestamptz,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    -- Times the task was rescued from a worker that lost its lease (died or
    -- hung). Not delivery attempts: a rescue refunds the claim's attempt and
    -- counts here, against GOODFELLAZ17_MAX_ORPHANINGS, so a crash is not a
    -- delivery failure but a task that kills its workers still dead-letters.
    -- A drain resets attempts, never this history.
    orphanings        integer          NOT NULL DEFAULT 0 CHECK (orphanings >= 0),
    UNIQUE (order_id, seq),
    CHECK (status <> 'EXECUTING' OR (lease_expires_at IS NOT NULL AND fencing_token IS NOT NULL))
);

-- The claim walks this index in queue order.
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
-- Units delivered per minute (console chart and rate, task_delivered_per_minute):
-- an index-only range scan of the last hour. Also where the queue's front is
-- found from (order_queue_start). Migration 0002 builds it CONCURRENTLY.
CREATE INDEX order_tasks_completed_executed_at_idx
    ON order_tasks (executed_at) INCLUDE (quantity)
    WHERE status = 'COMPLETED';

-- Due: waiting, and any backoff over. The triggers' test for "became due".
CREATE FUNCTION order_task_is_due(status text, retry_after timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT status IN ('PENDING', 'FAILED_RETRYING') AND (retry_after IS NULL OR retry_after <= now())
$$;

-- Where a new order's tasks enter the queue: at its arrival time or at the
-- queue's front (the smallest position still waiting), whichever is later,
-- so new work lands where the claimers are, not behind the index entries
-- claimed tasks leave (which a long-open snapshot keeps from being cleaned
-- up). The front is searched for from the furthest of the last sixteen
-- completions, a short backward read of the completed index, rather than
-- from the head of the due index. Waiting tasks behind that point are
-- retries and rescued work, which the claimers go back for anyway.
CREATE FUNCTION order_queue_start(arrival timestamptz) RETURNS double precision
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

-- A task's queue position: its order's start plus one fair share per task
-- ahead of it, in runs of run_length (domain/queue.py: RUN_LENGTH, also the
-- default claim batch). Run k starts k x run_length fair shares after the
-- start; within a round each order has its own slot (a hash of its id) in
-- which its run's tasks follow each other, so a claim of one run's length
-- usually touches one or two orders, and a new order waits at most one run
-- of each order ahead of it, never behind a whole big order. The DEFAULT is
-- for callers of the previous release's four-argument form.
CREATE FUNCTION order_task_position(start double precision, order_id uuid, seq integer,
                                    fair_share double precision, run_length integer DEFAULT 10)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT start
         + (seq / run_length) * run_length * fair_share
         + ((hashtext(order_id::text) & 1023) * run_length + seq % run_length) * fair_share / 1024
$$;

-- The claim (queries.sql: task_claim_batch). Up to p_limit due tasks in
-- queue order from the claimer's place, skipping rows other workers hold,
-- only for backends with a healthy node, never for a COMPLETED order, not at
-- all while chaos pauses the workers; each gets a lease, a new fencing token
-- and a node, round-robin over the healthy ones. A function so that its plan
-- is fixed: with the statistics of a small or freshly vacuumed table the
-- planner looked orders up by sequential scan, or read every due task by
-- bitmap and sorted them, and a prepared plan kept that as the tables grew.
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

-- The outcome write (queries.sql: task_record_outcomes): a batch of
-- completions and failures, each fenced by its claim's token. Retryable
-- failures back off (the worker computes the jittered delay), permanent ones
-- and exhausted attempts go to the dead-letter queue. Planned with one
-- primary-key probe per task; the status guard is written
-- `(status = 'EXECUTING') IS TRUE` so that the partial index of executing
-- tasks cannot serve it at all (under an old snapshot that index keeps an
-- entry for every task that has passed through EXECUTING since).
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


-- ===========================================================================
-- 3. Accounting
--
-- Statement-level triggers with transition tables: a statement that changes
-- N tasks costs one aggregate over its own rows and, only for the orders
-- whose counters, first start or reopening change, one UPDATE of orders,
-- whatever N is. Every writer (the worker, the API, an operator's psql
-- session running the runbook) therefore leaves the counters exact.
-- ===========================================================================

-- One signed row per task version: +quantity for the new version, -quantity
-- for the old one, so summing per order and status gives the deltas.
CREATE TYPE task_change AS (order_id uuid, quantity bigint, status text);

-- Applies the deltas to orders: counters, PENDING -> PROCESSING on the first
-- start, COMPLETED when every unit is delivered, back to PROCESSING when a
-- task of a COMPLETED order opens again. Orders are locked in id order so
-- that concurrent batches cannot deadlock. Planned without sequential,
-- bitmap, hash or merge scans: a young orders table looks tiny to the
-- planner, and the cached plan kept a sequential scan as it grew. "Is this
-- order still PENDING" is one primary-key probe per order: OFFSET 0 keeps it
-- a per-order subplan, `IS TRUE` keeps the status out of the index condition.
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

-- What every accounting trigger calls: the deltas, then, when tasks became
-- due, a notification naming the smallest queue position among them, so an
-- idle claimer steps back only as far as the new work.
CREATE FUNCTION order_tasks_account(changes task_change[], first_due_position double precision)
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

-- New tasks count only when inserted in a status other than PENDING
-- (seeding by hand); new due tasks wake the claimers.
CREATE FUNCTION order_tasks_after_insert() RETURNS trigger
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

-- Reads the transition tables once: a +new and a -old change per task whose
-- status, quantity or order changed, and the smallest position that became due.
CREATE FUNCTION order_tasks_after_update() RETURNS trigger
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

CREATE FUNCTION order_tasks_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_account(
        ARRAY(SELECT ROW(o.order_id, -o.quantity, o.status)::task_change
              FROM old_rows o WHERE o.status <> 'PENDING'),
        NULL);
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


-- ===========================================================================
-- 4. Nodes: delivery capacity, with a circuit breaker kept from outcomes
-- ===========================================================================

CREATE TABLE nodes (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The backend the node serves (an operator's free label for where the
    -- capacity comes from).
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


-- ===========================================================================
-- 5. Workers: one row per worker process that ever ran, kept by its heartbeat
-- ===========================================================================

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


-- ===========================================================================
-- 6. Chaos injection
-- ===========================================================================

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


-- ===========================================================================
-- 7. Operator actions: the audit trail of the admin API, CLI and console
-- ===========================================================================

CREATE TABLE operator_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text        NOT NULL,
    order_id    uuid,
    actor       text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_order_idx ON operator_actions (order_id, created_at DESC);


-- ===========================================================================
-- 8. Invariants: the one definition, shared by the API, the CLI, the
-- metrics and the tests. Set-based: one aggregate over order_tasks answers
-- for every order at once; filtered by order_id it becomes an index lookup.
-- ===========================================================================

CREATE TABLE invariant_check_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id         uuid,
    check_timestamp  timestamptz NOT NULL DEFAULT now(),
    -- ORPHANS: the orphan check, which never counts as a global check.
    scope            text        NOT NULL CHECK (scope IN ('ORDER', 'GLOBAL', 'ORPHANS')),
    passed           boolean     NOT NULL,
    failed_checks    text[]      NOT NULL DEFAULT '{}',
    checks           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    orders_checked   integer     NOT NULL DEFAULT 0,
    duration_ms      double precision,
    -- Who ran it: the alerts read only MONITOR and CLI global checks.
    source           text        NOT NULL DEFAULT 'API'
                                 CONSTRAINT invariant_check_log_source_check
                                 CHECK (source IN ('MONITOR', 'CLI', 'API')),
    -- A global check lists at most 1,000 violations; this is how many it found.
    violation_count  integer     CHECK (violation_count >= 0)
);
CREATE INDEX invariant_check_log_order_idx ON invariant_check_log (order_id, check_timestamp DESC);
CREATE INDEX invariant_check_log_time_idx ON invariant_check_log (check_timestamp DESC);
-- The latest full global check (the metric, the console, the API's reuse).
CREATE INDEX invariant_check_log_global_idx ON invariant_check_log (check_timestamp DESC)
    WHERE scope = 'GLOBAL' AND order_id IS NULL;

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

-- The runbook's `SELECT * FROM v_invariant_health`.
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


-- ===========================================================================
-- 9. Console sessions: server-side, so logout, idle timeout and lifetime end
-- them. The cookie holds a random id; only its SHA-256 is kept here.
-- `key_binding` says which configured key opened it (an HMAC under the
-- session secret); `flash` is a one-shot notice for one page.
-- ===========================================================================

CREATE TABLE console_sessions (
    id_hash       text        PRIMARY KEY CHECK (id_hash ~ '^[0-9a-f]{64}$'),
    key_binding   text        NOT NULL CHECK (length(key_binding) BETWEEN 16 AND 128),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    flash         jsonb
);
-- The sweep of expired sessions at each login.
CREATE INDEX console_sessions_created_at_idx ON console_sessions (created_at);
