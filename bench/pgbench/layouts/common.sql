-- Storage-layout probes (bench/layouts.py): what every layout shares. Run
-- with search_path set to the layout's own schema.
--
-- A task's columns, as the layouts' tables take them (CREATE TABLE ... LIKE);
-- never holds a row.
CREATE TABLE task_columns (
    id               bigint      NOT NULL,
    order_id         bigint      NOT NULL,
    quantity         integer     NOT NULL,
    status           text        NOT NULL DEFAULT 'PENDING',
    position         bigint      NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    fencing_token    bigint,
    started_at       timestamptz,
    finished_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Orders as the product keeps them, cut to what the cycle touches; bigint
-- ids. The accounting is one call per completing statement, given the
-- finished tasks' orders and quantities: lock the touched orders in id order
-- (two batches sharing orders cannot deadlock), then add the units and close
-- the orders that are done.

CREATE TABLE orders (
    id           bigint      PRIMARY KEY,
    status       text        NOT NULL DEFAULT 'PENDING',
    quantity     integer     NOT NULL,
    delivered    integer     NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);

CREATE SEQUENCE fencing_token_seq AS bigint;

CREATE FUNCTION add_delivered_units(order_ids bigint[], quantities bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(order_ids) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM orders o WHERE o.id = ANY (order_ids) ORDER BY o.id FOR NO KEY UPDATE;
    UPDATE orders o SET
        delivered = o.delivered + d.units,
        status = CASE WHEN o.delivered + d.units = o.quantity THEN 'COMPLETED' ELSE 'PROCESSING' END,
        completed_at = CASE WHEN o.delivered + d.units = o.quantity THEN now() END,
        updated_at = now()
    FROM (SELECT f.order_id, sum(f.quantity) AS units
          FROM unnest(order_ids, quantities) AS f (order_id, quantity)
          GROUP BY f.order_id) AS d
    WHERE o.id = d.order_id;
END;
$$;

-- Daily partitions of a finished-work table, [first, last] inclusive.
CREATE FUNCTION create_day_partitions(parent text, first date, last date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    day date := first;
BEGIN
    WHILE day <= last LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       parent || '_' || to_char(day, 'YYYYMMDD'), parent, day, day + 1);
        day := day + 1;
    END LOOP;
END;
$$;

-- What a table of open tasks carries in every layout: the primary key, the
-- foreign key to its order, the claim index, the index of executing tasks
-- (rescue of expired leases) and the index by order.
CREATE FUNCTION add_open_task_indexes(open_table text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', open_table);
    EXECUTE format('ALTER TABLE %I ADD FOREIGN KEY (order_id) REFERENCES orders (id)', open_table);
    EXECUTE format('CREATE INDEX %I ON %I (position) '
                   'WHERE status IN (''PENDING'', ''FAILED_RETRYING'')',
                   open_table || '_claim_idx', open_table);
    EXECUTE format('CREATE INDEX %I ON %I (lease_expires_at) WHERE status = ''EXECUTING''',
                   open_table || '_executing_idx', open_table);
    EXECUTE format('CREATE INDEX %I ON %I (order_id)', open_table || '_order_idx', open_table);
END;
$$;

-- What a (partitioned) table of finished tasks carries: lookups by task and
-- by order, nothing for claims.
CREATE FUNCTION add_finished_task_indexes(finished_table text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE INDEX %I ON %I (id)', finished_table || '_id_idx', finished_table);
    EXECUTE format('CREATE INDEX %I ON %I (order_id)', finished_table || '_order_idx',
                   finished_table);
END;
$$;

-- The accounting trigger of the layouts whose completion is an UPDATE of
-- `tasks` (plain, listpart): tasks that became COMPLETED in the statement,
-- found by joining its OLD and NEW transition tables, add their units.
CREATE FUNCTION tasks_account() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    order_ids bigint[];
    quantities bigint[];
BEGIN
    SELECT COALESCE(array_agg(n.order_id), '{}'), COALESCE(array_agg(n.quantity), '{}')
    INTO order_ids, quantities
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status = 'COMPLETED' AND o.status <> 'COMPLETED';
    PERFORM add_delivered_units(order_ids, quantities);
    RETURN NULL;
END;
$$;
