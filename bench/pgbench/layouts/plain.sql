-- Layout "plain": one table for open and finished tasks (today's shape).
-- A completion updates the row in place; the claim index and the index of
-- executing tasks are partial, the others hold every task ever.
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

-- @indexes: built after the history is loaded
ALTER TABLE tasks ADD PRIMARY KEY (id);
ALTER TABLE tasks ADD FOREIGN KEY (order_id) REFERENCES orders (id);
CREATE INDEX tasks_claim_idx ON tasks (position) WHERE status IN ('PENDING', 'FAILED_RETRYING');
CREATE INDEX tasks_executing_idx ON tasks (lease_expires_at) WHERE status = 'EXECUTING';
CREATE INDEX tasks_order_idx ON tasks (order_id);

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
