-- Layout "listpart": one logical table partitioned by LIST on status. Open
-- tasks live in tasks_open, which alone carries the claim indexes; finished
-- tasks live in tasks_finished, itself partitioned by RANGE of finished_at
-- (one partition a day, insert-only, dropped whole at retention). The
-- completing UPDATE moves each row across by row movement, and the same
-- statement-level trigger as the plain layout's sees the moved rows in its
-- transition tables (bench/layouts.py checks that first).
CREATE TABLE tasks (
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
) PARTITION BY LIST (status);

CREATE TABLE tasks_open PARTITION OF tasks
    FOR VALUES IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING');
CREATE TABLE tasks_finished PARTITION OF tasks
    FOR VALUES IN ('COMPLETED', 'FAILED_PERMANENT') PARTITION BY RANGE (finished_at);
SELECT create_day_partitions('tasks_finished', current_date - 31, current_date + 1);

-- @indexes: built after the history is loaded
ALTER TABLE tasks_open ADD PRIMARY KEY (id);
ALTER TABLE tasks_open ADD FOREIGN KEY (order_id) REFERENCES orders (id);
CREATE INDEX tasks_open_claim_idx ON tasks_open (position)
    WHERE status IN ('PENDING', 'FAILED_RETRYING');
CREATE INDEX tasks_open_executing_idx ON tasks_open (lease_expires_at) WHERE status = 'EXECUTING';
CREATE INDEX tasks_open_order_idx ON tasks_open (order_id);
CREATE INDEX tasks_finished_id_idx ON tasks_finished (id);
CREATE INDEX tasks_finished_order_idx ON tasks_finished (order_id);

CREATE FUNCTION tasks_account() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    units bigint[];
BEGIN
    SELECT COALESCE(array_agg(d.order_id ORDER BY d.order_id), '{}'),
           COALESCE(array_agg(d.units ORDER BY d.order_id), '{}')
    INTO ids, units
    FROM (SELECT n.order_id, sum(n.quantity) AS units
          FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE n.status = 'COMPLETED' AND o.status <> 'COMPLETED'
          GROUP BY n.order_id) d;
    PERFORM add_delivered_units(ids, units);
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_account AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_account();
