-- Where a new order's tasks enter the queue.
--
-- A task's queue_position is its order's start plus one second (the fair
-- share) per task ahead of it in the order; claimers walk the queue in
-- position order. The start used to be the order's arrival time. While a
-- backlog is worked through, the positions in use run ahead of the clock, so
-- a new order then landed behind the claimers, among the index entries that
-- claimed tasks leave behind: every claimer had to walk back over them to
-- reach it, and they pile up while any session holds an old snapshot.
--
-- Now an order starts at its arrival time or at the queue's front (the
-- smallest position still waiting), whichever is later. Fairness is the same
-- (a new order interleaves, task for task, with the orders being worked at
-- the front; a big order never blocks a small one), and new work lands where
-- the claimers are.

CREATE FUNCTION order_queue_start(arrival timestamptz) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT GREATEST(
        extract(epoch FROM arrival)::double precision,
        (SELECT t.queue_position
           FROM order_tasks t
          WHERE t.status IN ('PENDING', 'FAILED_RETRYING')
          ORDER BY t.queue_position
          LIMIT 1))
$$;
