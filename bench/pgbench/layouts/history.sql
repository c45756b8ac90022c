-- Layout "history": open tasks in their own table (the claim indexes, the
-- foreign key); a completion deletes the row and inserts it into
-- tasks_history in the same statement. tasks_history is partitioned by RANGE
-- of finished_at like listpart's finished partition, so the two layouts
-- differ only in how a row leaves the open table (an explicit DELETE ...
-- INSERT against row movement). The accounting trigger reads the rows that
-- arrive in the history.
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
);

CREATE TABLE tasks_history (LIKE tasks INCLUDING DEFAULTS) PARTITION BY RANGE (finished_at);
SELECT create_day_partitions('tasks_history', current_date - 31, current_date + 1);

-- @indexes: built after the history is loaded
ALTER TABLE tasks ADD PRIMARY KEY (id);
ALTER TABLE tasks ADD FOREIGN KEY (order_id) REFERENCES orders (id);
CREATE INDEX tasks_claim_idx ON tasks (position) WHERE status IN ('PENDING', 'FAILED_RETRYING');
CREATE INDEX tasks_executing_idx ON tasks (lease_expires_at) WHERE status = 'EXECUTING';
CREATE INDEX tasks_order_idx ON tasks (order_id);
CREATE INDEX tasks_history_id_idx ON tasks_history (id);
CREATE INDEX tasks_history_order_idx ON tasks_history (order_id);

CREATE FUNCTION tasks_history_account() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    units bigint[];
BEGIN
    SELECT COALESCE(array_agg(d.order_id ORDER BY d.order_id), '{}'),
           COALESCE(array_agg(d.units ORDER BY d.order_id), '{}')
    INTO ids, units
    FROM (SELECT n.order_id, sum(n.quantity) AS units
          FROM new_rows n
          WHERE n.status = 'COMPLETED'
          GROUP BY n.order_id) d;
    PERFORM add_delivered_units(ids, units);
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_history_account AFTER INSERT ON tasks_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_history_account();
