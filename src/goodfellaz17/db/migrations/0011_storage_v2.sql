-- Storage v2 (issue 13): open work in a small hot table, finished work in
-- day partitions that leave by retention, history-independent checks, and
-- an accounting trigger that reads each statement's rows once.
--
-- Why. order_tasks kept every finished task forever: after a year of 10,000
-- orders a day the table that every claim, outcome and rescue touches held
-- ~140 M rows, every transition updated indexes that also covered all of
-- history, the planner's statistics for the hot statements described rows
-- no hot statement reads (hence the plan pinning of 0007), and every read
-- over "all orders" (the global invariant check, the console's counts) grew
-- without bound.
--
-- The shape (docs/ARCHITECTURE.md, "Storage", has the measurements):
--
--   order_tasks                  PARTITION BY LIST (status)
--   ├─ order_tasks_open          PENDING, EXECUTING, FAILED_RETRYING: the
--   │                            claim, outcome and rescue indexes; its size
--   │                            follows the open work, not history
--   └─ order_tasks_finished      COMPLETED, FAILED_PERMANENT
--        PARTITION BY RANGE (order_id): a partition per day of order creation
--        (order ids are now UUIDv7, whose first 48 bits are the creation time
--        in ms), and a DEFAULT partition for what no day covers
--   orders                       PARTITION BY RANGE (id): the same days, and
--                                a DEFAULT partition
--
-- A task that finishes moves out of the open partition in the statement that
-- finishes it (row movement: the UPDATE deletes it from one partition and
-- inserts it into the other), and an operator's drain moves it back the same
-- way, so every SQL of the runbook keeps working verbatim against order_tasks
-- and orders. An order and its finished tasks share a day, and a day leaves
-- the database by dropping two partitions (storage_drop_day), never by a
-- mass DELETE. Existing orders keep their random (version 4) ids: they are
-- copied into whichever partition their bits fall in (the DEFAULT one for
-- nearly all of them) and leave it by retention like any finished order.
--
-- The idempotency keys move to a table of their own: a unique constraint on
-- a partitioned table must include the partition key (the order id).
--
-- Rolling upgrade: the functions a running worker of the previous release
-- calls keep their signatures and result columns (task_claim_batch,
-- task_record_outcomes, order_task_position, order_queue_start), and the
-- tables are locked for the copy in the order the workers lock them (tasks,
-- then orders), so such a worker only waits.

LOCK TABLE order_tasks, orders IN ACCESS EXCLUSIVE MODE;

-- ---------------------------------------------------------------------------
-- 1. Time-ordered ids
-- ---------------------------------------------------------------------------

-- A version 7 UUID (RFC 9562): 48 bits of Unix time in ms, then random bits.
-- PostgreSQL 16 has no built-in one (18 has uuidv7()).
CREATE FUNCTION uuid_v7(at timestamptz DEFAULT clock_timestamp()) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- The smallest version 7 UUID of an instant: where a day's range begins.
CREATE FUNCTION uuid_v7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                  || '\x70000000000000000000'::bytea, 'hex')::uuid
$$;

-- ---------------------------------------------------------------------------
-- 2. The old tables step aside (their data is copied below)
-- ---------------------------------------------------------------------------

DROP VIEW v_invariant_health;
DROP VIEW v_order_invariants;
ALTER TABLE orders RENAME TO orders_v1;
ALTER TABLE order_tasks RENAME TO order_tasks_v1;
ALTER TABLE order_tasks_v1 DROP CONSTRAINT order_tasks_order_id_fkey;
ALTER TABLE order_tasks_v1 DROP CONSTRAINT order_tasks_pkey;
ALTER TABLE order_tasks_v1 DROP CONSTRAINT order_tasks_order_id_seq_key;
ALTER TABLE orders_v1 DROP CONSTRAINT orders_pkey;
ALTER TABLE orders_v1 DROP CONSTRAINT orders_idempotency_scope_key_key;
DROP INDEX orders_created_at_idx, orders_active_idx, orders_pending_idx,
           order_tasks_due_idx, order_tasks_executing_idx, order_tasks_dead_letter_idx,
           order_tasks_retry_after_idx, order_tasks_order_status_idx,
           order_tasks_completed_executed_at_idx;
-- Both accounting paths are redefined below; the old tables go with theirs.
DROP TRIGGER order_tasks_account_insert ON order_tasks_v1;
DROP TRIGGER order_tasks_account_update ON order_tasks_v1;
DROP TRIGGER order_tasks_account_delete ON order_tasks_v1;
DROP TRIGGER orders_complete_closes_tasks ON orders_v1;

-- ---------------------------------------------------------------------------
-- 3. Orders
-- ---------------------------------------------------------------------------

CREATE TABLE orders (
    id                      uuid        NOT NULL DEFAULT uuid_v7(),
    status                  text        NOT NULL DEFAULT 'PENDING'
                                        CONSTRAINT orders_status_check
                                        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED')),
    quantity                integer     NOT NULL CONSTRAINT orders_quantity_check CHECK (quantity > 0),
    delivered               integer     NOT NULL DEFAULT 0 CONSTRAINT orders_delivered_check CHECK (delivered >= 0),
    failed_permanent_plays  integer     NOT NULL DEFAULT 0 CONSTRAINT orders_failed_permanent_plays_check CHECK (failed_permanent_plays >= 0),
    target                  text        NOT NULL CONSTRAINT orders_target_check CHECK (length(target) BETWEEN 1 AND 512),
    backend                 text        NOT NULL CONSTRAINT orders_backend_check CHECK (backend ~ '^[a-z][a-z0-9_-]{0,31}$'),
    task_count              integer     NOT NULL CONSTRAINT orders_task_count_check CHECK (task_count > 0),
    idempotency_key         text        CONSTRAINT orders_idempotency_key_check CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash            text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz,
    completed_at            timestamptz,
    idempotency_scope       text        CONSTRAINT orders_idempotency_scope_check CHECK (length(idempotency_scope) BETWEEN 1 AND 200),
    -- When the global invariant check last found this finished order exact,
    -- and the transaction that said so: while the row's xmin is still that
    -- transaction, nothing has changed the order since (whoever changed it,
    -- triggers or not), and the global check need not read its tasks again.
    verified_at             timestamptz,
    verified_xid            xid,
    CONSTRAINT orders_idempotency_scope_present
        CHECK ((idempotency_key IS NULL) = (idempotency_scope IS NULL)),
    CONSTRAINT orders_pkey PRIMARY KEY (id)
) PARTITION BY RANGE (id);

CREATE TABLE orders_default PARTITION OF orders DEFAULT WITH (fillfactor = 80);

-- Listing, newest first (order_list's keyset pagination).
CREATE INDEX orders_created_at_idx ON orders (created_at DESC, id DESC);
-- Open orders: the runbook's stuck-orders query, the metrics, the console.
CREATE INDEX orders_active_idx ON orders (status, created_at)
    WHERE status IN ('PENDING', 'PROCESSING');
-- "Does this claim start the order?" reads this index, never the order's row.
CREATE INDEX orders_pending_idx ON orders (id) WHERE status = 'PENDING';
-- The verified orders the global check re-reads anyway, oldest check first
-- (a task changed with the triggers off leaves its order's row as it was).
CREATE INDEX orders_verified_at_idx ON orders (verified_at) WHERE verified_xid IS NOT NULL;

-- Idempotency keys, per caller's scope. The key's row is written first, in
-- the order's own statement, so two requests with one key create one order.
CREATE TABLE order_idempotency_keys (
    scope         text        NOT NULL CONSTRAINT order_idempotency_keys_scope_check CHECK (length(scope) BETWEEN 1 AND 200),
    key           text        NOT NULL CONSTRAINT order_idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255),
    order_id      uuid        NOT NULL,
    request_hash  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
-- Retention.
CREATE INDEX order_idempotency_keys_created_at_idx ON order_idempotency_keys (created_at);

-- ---------------------------------------------------------------------------
-- 4. Tasks
-- ---------------------------------------------------------------------------

CREATE TABLE order_tasks (
    id                uuid             NOT NULL DEFAULT gen_random_uuid(),
    order_id          uuid             NOT NULL,
    seq               integer          NOT NULL CONSTRAINT order_tasks_seq_check CHECK (seq >= 0),
    quantity          integer          NOT NULL CONSTRAINT order_tasks_quantity_check CHECK (quantity > 0),
    status            text             NOT NULL DEFAULT 'PENDING'
                                       CONSTRAINT order_tasks_status_check
                                       CHECK (status IN ('PENDING', 'EXECUTING', 'COMPLETED',
                                                         'FAILED_RETRYING', 'FAILED_PERMANENT')),
    attempts          integer          NOT NULL DEFAULT 0 CONSTRAINT order_tasks_attempts_check CHECK (attempts >= 0),
    retry_after       timestamptz,
    last_error        text,
    executed_at       timestamptz,
    queue_position    double precision NOT NULL,
    lease_owner       text,
    lease_expires_at  timestamptz,
    fencing_token     bigint,
    node_id           bigint,
    started_at        timestamptz,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    orphanings        integer          NOT NULL DEFAULT 0 CONSTRAINT order_tasks_orphanings_check CHECK (orphanings >= 0),
    -- The order's backend, copied: the claim picks the tasks of backends
    -- with a healthy node without reading orders.
    backend           text             NOT NULL CONSTRAINT order_tasks_backend_check CHECK (backend ~ '^[a-z][a-z0-9_-]{0,31}$'),
    CONSTRAINT order_tasks_executing_has_lease
        CHECK (status <> 'EXECUTING' OR (lease_expires_at IS NOT NULL AND fencing_token IS NOT NULL))
) PARTITION BY LIST (status);

CREATE TABLE order_tasks_open PARTITION OF order_tasks
    FOR VALUES IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')
    WITH (fillfactor = 90);
CREATE TABLE order_tasks_finished PARTITION OF order_tasks
    FOR VALUES IN ('COMPLETED', 'FAILED_PERMANENT')
    PARTITION BY RANGE (order_id);
CREATE TABLE order_tasks_finished_default PARTITION OF order_tasks_finished DEFAULT;

-- A task inserted without its backend (by hand, or by a caller of the
-- previous release) takes its order's. order_create passes it: the WHEN
-- keeps this off its path.
CREATE FUNCTION order_tasks_default_backend() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.backend := (SELECT o.backend FROM orders o WHERE o.id = NEW.order_id);
    RETURN NEW;
END;
$$;

CREATE TRIGGER order_tasks_default_backend BEFORE INSERT ON order_tasks
    FOR EACH ROW
    WHEN (NEW.backend IS NULL)
    EXECUTE FUNCTION order_tasks_default_backend();

-- The open partition: everything a claim, an outcome or a rescue reads.
CREATE UNIQUE INDEX order_tasks_open_pkey ON order_tasks_open (id);
-- The claim walks this index in queue order.
CREATE INDEX order_tasks_due_idx ON order_tasks_open (queue_position)
    INCLUDE (retry_after, backend)
    WHERE status IN ('PENDING', 'FAILED_RETRYING');
-- Orphan rescue and the long-running-task alert.
CREATE INDEX order_tasks_executing_idx ON order_tasks_open (lease_expires_at)
    WHERE status = 'EXECUTING';
-- Earliest retry, so an idle worker wakes when the next backoff ends.
CREATE INDEX order_tasks_retry_after_idx ON order_tasks_open (retry_after)
    WHERE status = 'FAILED_RETRYING';
-- An order's open tasks (operator actions, progress).
CREATE UNIQUE INDEX order_tasks_open_order_idx ON order_tasks_open (order_id, seq);

-- The finished partitions (each day partition gets these): an order's
-- finished tasks, the dead letters newest first (the runbook's "recent
-- failures"), and a block-range index on when tasks finished (the console's
-- per-minute chart), nearly free to keep since rows arrive in time order.
CREATE INDEX order_tasks_finished_order_idx ON order_tasks_finished (order_id)
    INCLUDE (status, quantity);
CREATE INDEX order_tasks_dead_letter_idx ON order_tasks_finished (executed_at DESC)
    WHERE status = 'FAILED_PERMANENT';
CREATE INDEX order_tasks_finished_executed_at_idx ON order_tasks_finished
    USING brin (executed_at);

-- ---------------------------------------------------------------------------
-- 5. Day partitions: made ahead of time, dropped by retention
-- ---------------------------------------------------------------------------

-- One row per day whose partitions exist or existed: what the maintenance
-- leader did (and the archive's bookkeeping).
CREATE TABLE storage_days (
    day          date        PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz,
    dropped_at   timestamptz
);

-- The partitions of one day (UTC), for orders and for finished tasks, if
-- they do not exist yet. Rows that already sit in a DEFAULT partition for
-- that day (taken while no partition covered it) are moved in first, so
-- attaching succeeds: a missing partition never fails an order or a
-- completion, it only costs this move later.
CREATE FUNCTION storage_create_day(p_day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    lo constant uuid := uuid_v7_floor(p_day::timestamp AT TIME ZONE 'UTC');
    hi constant uuid := uuid_v7_floor((p_day + 1)::timestamp AT TIME ZONE 'UTC');
    orders_part constant text := 'orders_p' || to_char(p_day, 'YYYYMMDD');
    tasks_part constant text := 'order_tasks_finished_p' || to_char(p_day, 'YYYYMMDD');
BEGIN
    IF to_regclass(orders_part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- The move below is a DELETE and an INSERT, not row movement: a writer
    -- that waited on a moved row's lock would find it deleted and skip it.
    -- So writers of the DEFAULT partitions wait for this transaction instead,
    -- and then find the rows where they now are.
    LOCK TABLE orders_default, order_tasks_finished_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                   ' WITH (fillfactor = 80)', orders_part);
    EXECUTE format('CREATE TABLE %I (LIKE order_tasks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   tasks_part);
    EXECUTE format('WITH moved AS (DELETE FROM orders_default WHERE id >= %L AND id < %L'
                   ' RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, orders_part);
    EXECUTE format('WITH moved AS (DELETE FROM order_tasks_finished_default'
                   ' WHERE order_id >= %L AND order_id < %L RETURNING *)'
                   ' INSERT INTO %I SELECT * FROM moved', lo, hi, tasks_part);
    EXECUTE format('ALTER TABLE orders ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   orders_part, lo, hi);
    EXECUTE format('ALTER TABLE order_tasks_finished ATTACH PARTITION %I'
                   ' FOR VALUES FROM (%L) TO (%L)', tasks_part, lo, hi);
    INSERT INTO storage_days (day) VALUES (p_day)
    ON CONFLICT (day) DO UPDATE SET created_at = now(), dropped_at = NULL, archived_at = NULL;
    RETURN true;
END;
$$;

-- Every day from p_from to p_to has its partitions; returns how many days
-- were created.
CREATE FUNCTION storage_ensure_days(p_from date, p_to date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
BEGIN
    FOR d IN 0 .. (p_to - p_from) LOOP
        IF storage_create_day(p_from + d) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- Why a day's partitions must stay: NULL when every order taken that day
-- is COMPLETED and has been for the whole retention period (an order still
-- open, or completed recently, keeps its day).
CREATE FUNCTION storage_day_blocker(p_day date, p_retention interval) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    orders_part constant text := 'orders_p' || to_char(p_day, 'YYYYMMDD');
    open_orders bigint;
    recent_orders bigint;
BEGIN
    IF to_regclass(orders_part) IS NULL THEN
        RETURN 'no partitions';
    END IF;
    IF (p_day + 1)::timestamp AT TIME ZONE 'UTC' > now() - p_retention THEN
        RETURN 'within the retention period';
    END IF;
    EXECUTE format('SELECT count(*) FILTER (WHERE status <> ''COMPLETED''),'
                   '       count(*) FILTER (WHERE status = ''COMPLETED'''
                   '                          AND completed_at > now() - %L::interval)'
                   '  FROM %I', p_retention, orders_part)
        INTO open_orders, recent_orders;
    IF open_orders > 0 THEN
        RETURN format('%s order(s) still open', open_orders);
    END IF;
    IF recent_orders > 0 THEN
        RETURN format('%s order(s) completed within the retention period', recent_orders);
    END IF;
    RETURN NULL;
END;
$$;

-- Drops a day's two partitions: its orders and their finished tasks leave
-- together (their open tasks cannot exist: a COMPLETED order has none).
CREATE FUNCTION storage_drop_day(p_day date) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %I', 'order_tasks_finished_p' || to_char(p_day, 'YYYYMMDD'));
    EXECUTE format('DROP TABLE IF EXISTS %I', 'orders_p' || to_char(p_day, 'YYYYMMDD'));
    UPDATE storage_days SET dropped_at = now() WHERE day = p_day;
END;
$$;

-- ---------------------------------------------------------------------------
-- 6. Copy, then the old tables go
-- ---------------------------------------------------------------------------

SELECT storage_ensure_days((now() AT TIME ZONE 'UTC')::date - 1,
                           (now() AT TIME ZONE 'UTC')::date + 3);

INSERT INTO order_idempotency_keys (scope, key, order_id, request_hash, created_at)
SELECT idempotency_scope, idempotency_key, id, request_hash, created_at
FROM orders_v1
WHERE idempotency_key IS NOT NULL;

INSERT INTO orders (id, status, quantity, delivered, failed_permanent_plays, target, backend,
                    task_count, idempotency_key, request_hash, created_at, updated_at,
                    started_at, completed_at, idempotency_scope)
SELECT id, status, quantity, delivered, failed_permanent_plays, target, backend,
       task_count, idempotency_key, request_hash, created_at, updated_at,
       started_at, completed_at, idempotency_scope
FROM orders_v1;

-- No accounting trigger is on the new table yet: the copied counters are
-- those the old triggers kept exact.
INSERT INTO order_tasks (id, order_id, seq, quantity, status, attempts, retry_after, last_error,
                         executed_at, queue_position, lease_owner, lease_expires_at,
                         fencing_token, node_id, started_at, created_at, orphanings, backend)
SELECT t.id, t.order_id, t.seq, t.quantity, t.status, t.attempts, t.retry_after, t.last_error,
       t.executed_at, t.queue_position, t.lease_owner, t.lease_expires_at,
       t.fencing_token, t.node_id, t.started_at, t.created_at, t.orphanings, o.backend
FROM order_tasks_v1 t
JOIN orders_v1 o ON o.id = t.order_id;

DROP TABLE order_tasks_v1;
DROP TABLE orders_v1;
DROP FUNCTION order_tasks_account(task_change[], double precision);
DROP FUNCTION order_tasks_apply_changes(task_change[]);
DROP FUNCTION order_task_is_due(text, timestamptz);
DROP TYPE task_change;

-- Retention of the operators' audit trail reads it by age.
CREATE INDEX operator_actions_created_at_idx ON operator_actions (created_at);

-- Where the claimers are in the queue (the furthest position each claimed
-- last): where a new order's tasks join it (order_queue_start).
ALTER TABLE workers ADD COLUMN claim_position double precision;

-- ---------------------------------------------------------------------------
-- 7. Accounting
-- ---------------------------------------------------------------------------

-- The deltas of one statement's task rows, applied to their orders: +quantity
-- for each new row, -quantity for each old row, in COMPLETED and in
-- FAILED_PERMANENT, summed per order (a row that kept its status cancels
-- out). `started`: a new row left PENDING; `active`: a new row is open. An
-- order is touched when a counter changes, or when it is PENDING and a task
-- started (a claim sets that itself; this covers hand-written SQL).
-- Planned without sequential, bitmap, hash or merge scans: one primary-key
-- probe per touched order whatever the statistics say.
CREATE FUNCTION order_tasks_apply(p_orders uuid[], p_delivered bigint[], p_dead bigint[],
                                  p_started boolean[], p_active boolean[])
RETURNS void LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    -- Lock in id order: concurrent statements touching the same orders
    -- cannot deadlock.
    PERFORM 1 FROM orders o
    WHERE o.id IN (SELECT c.order_id
                     FROM unnest(p_orders, p_delivered, p_dead, p_started)
                          AS c (order_id, d_delivered, d_dead, started)
                    WHERE c.d_delivered <> 0 OR c.d_dead <> 0
                       OR (c.started AND EXISTS (SELECT 1 FROM orders p
                                                  WHERE p.id = c.order_id
                                                    AND p.status = 'PENDING')))
    ORDER BY o.id
    FOR NO KEY UPDATE;

    UPDATE orders o SET
        delivered = o.delivered + c.d_delivered,
        failed_permanent_plays = o.failed_permanent_plays + c.d_dead,
        status = CASE
            WHEN o.delivered + c.d_delivered = o.quantity THEN 'COMPLETED'
            WHEN o.status = 'COMPLETED' AND c.active THEN 'PROCESSING'
            WHEN o.status = 'PENDING' AND c.started THEN 'PROCESSING'
            ELSE o.status END,
        started_at = CASE WHEN c.started THEN COALESCE(o.started_at, now()) ELSE o.started_at END,
        completed_at = CASE
            WHEN o.delivered + c.d_delivered = o.quantity THEN COALESCE(o.completed_at, now())
            WHEN o.status = 'COMPLETED' AND c.active THEN NULL
            ELSE o.completed_at END,
        updated_at = now()
    FROM unnest(p_orders, p_delivered, p_dead, p_started, p_active)
         AS c (order_id, d_delivered, d_dead, started, active)
    WHERE o.id = c.order_id
      AND (c.d_delivered <> 0 OR c.d_dead <> 0
           OR (c.started AND o.status = 'PENDING')
           OR (c.active AND o.status = 'COMPLETED'));
END;
$$;

CREATE OR REPLACE FUNCTION order_tasks_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_due double precision;
BEGIN
    PERFORM order_tasks_apply(array_agg(x.order_id), array_agg(x.d_delivered),
                              array_agg(x.d_dead), array_agg(x.started), array_agg(x.active))
    FROM (SELECT n.order_id,
                 COALESCE(sum(n.quantity) FILTER (WHERE n.status = 'COMPLETED'), 0) AS d_delivered,
                 COALESCE(sum(n.quantity) FILTER (WHERE n.status = 'FAILED_PERMANENT'), 0) AS d_dead,
                 bool_or(n.status <> 'PENDING') AS started,
                 bool_or(n.status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')) AS active
            FROM new_rows n
           WHERE n.status <> 'PENDING'
           GROUP BY n.order_id) x
    HAVING count(*) > 0;
    SELECT min(n.queue_position) INTO first_due FROM new_rows n
    WHERE n.status IN ('PENDING', 'FAILED_RETRYING')
      AND (n.retry_after IS NULL OR n.retry_after <= now());
    IF first_due IS NOT NULL THEN
        -- Delivered at commit: wakes idle workers at once, and says how far
        -- back in the queue the new work is.
        PERFORM pg_notify('goodfellaz17_tasks_due', first_due::text);
    END IF;
    RETURN NULL;
END;
$$;

-- Reads each transition table once, with no join between them: a row that
-- kept its status and quantity adds and takes away the same amount.
CREATE OR REPLACE FUNCTION order_tasks_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_due double precision;
BEGIN
    PERFORM order_tasks_apply(array_agg(x.order_id), array_agg(x.d_delivered),
                              array_agg(x.d_dead), array_agg(x.started), array_agg(x.active))
    FROM (SELECT c.order_id,
                 COALESCE(sum(c.delivered), 0) AS d_delivered,
                 COALESCE(sum(c.dead), 0) AS d_dead,
                 bool_or(c.started) AS started,
                 bool_or(c.active) AS active
            FROM (SELECT n.order_id,
                         CASE WHEN n.status = 'COMPLETED' THEN n.quantity END AS delivered,
                         CASE WHEN n.status = 'FAILED_PERMANENT' THEN n.quantity END AS dead,
                         n.status <> 'PENDING' AS started,
                         n.status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING') AS active
                    FROM new_rows n
                  UNION ALL
                  SELECT o.order_id,
                         CASE WHEN o.status = 'COMPLETED' THEN -o.quantity END,
                         CASE WHEN o.status = 'FAILED_PERMANENT' THEN -o.quantity END,
                         false, false
                    FROM old_rows o
                   WHERE o.status IN ('COMPLETED', 'FAILED_PERMANENT')) c
           GROUP BY c.order_id) x
    WHERE x.d_delivered <> 0 OR x.d_dead <> 0 OR x.started OR x.active
    HAVING count(*) > 0;
    SELECT min(n.queue_position) INTO first_due FROM new_rows n
    WHERE n.status IN ('PENDING', 'FAILED_RETRYING')
      AND (n.retry_after IS NULL OR n.retry_after <= now());
    IF first_due IS NOT NULL THEN
        PERFORM pg_notify('goodfellaz17_tasks_due', first_due::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION order_tasks_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM order_tasks_apply(array_agg(x.order_id), array_agg(x.d_delivered),
                              array_agg(x.d_dead), array_agg(false), array_agg(false))
    FROM (SELECT o.order_id,
                 COALESCE(-sum(o.quantity) FILTER (WHERE o.status = 'COMPLETED'), 0) AS d_delivered,
                 COALESCE(-sum(o.quantity) FILTER (WHERE o.status = 'FAILED_PERMANENT'), 0) AS d_dead
            FROM old_rows o
           WHERE o.status IN ('COMPLETED', 'FAILED_PERMANENT')
           GROUP BY o.order_id) x
    HAVING count(*) > 0;
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
-- tasks are still open: those go to the dead-letter queue (orders_after_complete,
-- unchanged), so a COMPLETED order never has open tasks.
CREATE TRIGGER orders_complete_closes_tasks AFTER UPDATE OF status ON orders
    FOR EACH ROW
    WHEN (NEW.status = 'COMPLETED' AND OLD.status <> 'COMPLETED' AND NEW.delivered < NEW.quantity)
    EXECUTE FUNCTION orders_after_complete();

-- ---------------------------------------------------------------------------
-- 8. The queue: claims, outcomes, where new work joins
-- ---------------------------------------------------------------------------

-- Where a new order's tasks enter the queue: at its arrival or at the
-- queue's front, whichever is later. The front is searched for from where
-- the claimers are (the furthest position a live worker claimed last), not
-- from the head of the due index, which is full of entries that claimed
-- tasks leave until vacuum removes them (never, while a snapshot is held).
CREATE OR REPLACE FUNCTION order_queue_start(arrival timestamptz) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT GREATEST(
        extract(epoch FROM arrival)::double precision,
        (SELECT t.queue_position
           FROM order_tasks_open t
          WHERE t.status IN ('PENDING', 'FAILED_RETRYING')
            AND t.queue_position >= (
                SELECT COALESCE(max(w.claim_position), '-Infinity')
                FROM workers w
                WHERE w.status = 'RUNNING'
                  AND w.last_heartbeat_at > now() - interval '1 minute')
          ORDER BY t.queue_position
          LIMIT 1))
$$;

-- The claim. Up to p_limit due tasks in queue order from the claimer's
-- place, skipping rows other workers hold, only for backends with a healthy
-- node, not at all while chaos pauses the workers; each gets a lease, a new
-- fencing token and a node, round-robin over the healthy ones. The UPDATE
-- names the open partition itself: a claim changes no counter, so it skips
-- the accounting trigger (and its transition tables), and starts its orders
-- (PENDING -> PROCESSING) itself, skipping an order someone else has locked
-- (whoever that is starts it too, or completes it). Orders are read once
-- per order of the batch, not per task. The claimer's place is recorded on its
-- worker's row for order_queue_start.
CREATE OR REPLACE FUNCTION task_claim_batch(p_worker_id text, p_limit integer,
                                            p_lease_seconds double precision,
                                            p_from_position double precision,
                                            p_node_offset integer)
RETURNS TABLE (id uuid, order_id uuid, seq integer, quantity integer, attempts integer,
               fencing_token bigint, queue_position double precision, target text, backend text,
               node_id bigint, node_identifier text, endpoint text, capacity_per_hour integer)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
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
        SELECT t.id, t.order_id, t.backend
        FROM order_tasks_open t
        WHERE t.status IN ('PENDING', 'FAILED_RETRYING')
          AND (t.retry_after IS NULL OR t.retry_after <= now())
          AND t.queue_position >= p_from_position
          AND t.backend IN (SELECT provider FROM healthy)
          AND NOT EXISTS (
              SELECT 1 FROM chaos_settings c
              WHERE c.enabled AND c.worker_paused AND (c.expires_at IS NULL OR c.expires_at > now()))
        ORDER BY t.queue_position
        LIMIT p_limit
        FOR UPDATE OF t SKIP LOCKED
    ), closed AS (
        -- Orders that are COMPLETED although a task is open: the triggers
        -- never leave that state, but a row changed by hand with them off
        -- can, and a worker never executes a task of a COMPLETED order. One
        -- probe per order of the batch, not per task.
        SELECT d.order_id AS id
        FROM (SELECT DISTINCT order_id FROM due) d
        WHERE (SELECT o.status FROM orders o WHERE o.id = d.order_id) = 'COMPLETED'
    ), assigned AS (
        SELECT d.id,
               h.node_ids[1 + ((row_number() OVER () + p_node_offset) % cardinality(h.node_ids))]
                   AS node_id
        FROM due d
        JOIN healthy h ON h.provider = d.backend
        WHERE d.order_id NOT IN (SELECT c.id FROM closed c)
    ), claimed AS (
        UPDATE order_tasks_open t SET
            status = 'EXECUTING',
            attempts = t.attempts + 1,
            lease_owner = p_worker_id,
            lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            fencing_token = nextval('order_tasks_fencing_token_seq'),
            node_id = a.node_id,
            started_at = now()
        FROM assigned a
        WHERE t.id = a.id
        RETURNING t.id, t.order_id, t.seq, t.quantity, t.attempts, t.fencing_token,
                  t.queue_position, t.backend, t.node_id
    ), starting AS (
        SELECT o.id
        FROM orders o
        WHERE o.id = ANY (ARRAY(SELECT DISTINCT c.order_id FROM claimed c))
          AND (o.status = 'PENDING') IS TRUE  -- a primary-key probe, not a walk of PENDING orders
        ORDER BY o.id
        FOR NO KEY UPDATE SKIP LOCKED
    ), started AS (
        UPDATE orders o SET
            status = 'PROCESSING',
            started_at = COALESCE(o.started_at, now()),
            updated_at = now()
        FROM starting s
        WHERE o.id = s.id
        RETURNING o.id
    ), placed AS (
        UPDATE workers w SET claim_position = (SELECT max(c.queue_position) FROM claimed c)
        WHERE w.id = p_worker_id
          AND EXISTS (SELECT 1 FROM claimed)
        RETURNING w.id
    )
    SELECT c.id, c.order_id, c.seq, c.quantity, c.attempts, c.fencing_token, c.queue_position,
           o.target, c.backend, n.id, n.node_identifier, n.endpoint, n.capacity_per_hour
    FROM claimed c
    JOIN orders o ON o.id = c.order_id
    JOIN nodes n ON n.id = c.node_id
    WHERE (SELECT count(*) FROM started) >= 0
      AND (SELECT count(*) FROM placed) >= 0;
END;
$$;

-- The outcome write: a batch of completions and failures, each fenced by
-- its claim's token. A finished task moves to its day's partition in this
-- statement; the accounting trigger adds its units to its order. The
-- status guard is written twice on purpose: `status IN (...open...)` lets
-- the planner see that only the open partition can match, and
-- `(status = 'EXECUTING') IS TRUE` keeps the partial index of executing
-- tasks from serving it (under an old snapshot that index keeps an entry for
-- every task that has passed through EXECUTING since): one probe of the
-- open partition's id index per task.
CREATE OR REPLACE FUNCTION task_record_outcomes(p_done_ids uuid[], p_done_tokens bigint[],
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
          AND t.status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')
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
        FROM unnest(p_failed_ids, p_failed_tokens, p_errors, p_permanent, p_delays)
             AS f (id, token, error, permanent, delay)
        WHERE t.id = f.id
          AND t.fencing_token = f.token
          AND t.status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')
          AND (t.status = 'EXECUTING') IS TRUE
        RETURNING t.id, t.order_id, t.status, t.attempts, t.quantity
    )
    SELECT * FROM completed
    UNION ALL
    SELECT * FROM failed;
END;
$$;

-- ---------------------------------------------------------------------------
-- 9. Invariants: the one definition; the global check reads only what can
--    have changed since it last looked
-- ---------------------------------------------------------------------------

CREATE VIEW v_order_invariants AS
WITH per_order AS (
    SELECT o.id AS order_id, o.status, o.quantity, o.delivered, o.failed_permanent_plays,
           COALESCE(t.task_sum, 0)        AS task_sum,
           COALESCE(t.completed_sum, 0)   AS completed_sum,
           COALESCE(t.dead_sum, 0)        AS dead_sum,
           COALESCE(t.task_count, 0)      AS task_count,
           COALESCE(t.completed_count, 0) AS completed_count,
           COALESCE(t.open_count, 0)      AS open_count,
           COALESCE(t.expired_count, 0)   AS expired_count
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

-- The orders whose invariants the global check reads: every order not found
-- exact since its row last changed (open orders, finished ones changed since,
-- by anyone, with or without triggers). A finished order found exact is
-- marked verified, with the transaction's id, and its tasks are not read
-- again while its row is that version, so the check costs a scan of the
-- orders rows plus what open work and recent changes cost, never a read of
-- every task in history.
CREATE VIEW v_unverified_orders AS
SELECT o.id, o.xmin AS version, o.status
FROM orders o
WHERE o.verified_xid IS NULL OR o.xmin <> o.verified_xid;

CREATE VIEW v_unverified_invariants AS
SELECT i.*
FROM v_unverified_orders u
CROSS JOIN LATERAL (SELECT v.* FROM v_order_invariants v WHERE v.order_id = u.id) i;

-- The runbook's `SELECT * FROM v_invariant_health`: the log's last 24 hours,
-- and the orders violating an invariant now (only unverified orders can).
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
        FROM v_unverified_invariants WHERE NOT passed) v;
