-- Storage-layout probes (bench/layouts.py): what every layout shares. Run
-- with search_path set to the layout's own schema.
--
-- Orders as the product keeps them, cut to what the cycle touches; bigint
-- ids. The accounting is one statement per completing statement: lock the
-- touched orders in id order (two batches sharing orders cannot deadlock),
-- then add the units and close the orders that are done.

CREATE TABLE orders (
    id           bigint      PRIMARY KEY,
    status       text        NOT NULL DEFAULT 'PENDING',
    quantity     integer     NOT NULL,
    delivered    integer     NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);

CREATE SEQUENCE fencing_token_seq AS bigint;

CREATE FUNCTION add_delivered_units(order_ids bigint[], units bigint[]) RETURNS void
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
    FROM unnest(order_ids, units) AS d (order_id, units)
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
