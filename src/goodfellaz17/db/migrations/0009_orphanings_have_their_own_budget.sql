-- A worker crash is not a delivery failure (issue 14, item 12).
--
-- A task whose worker dies (SIGKILL, OOM, eviction) is rescued when its
-- lease runs out. The rescue used to leave the claim's attempt spent, so a
-- task caught in a few crashes in a row was dead-lettered after
-- GOODFELLAZ17_MAX_ATTEMPTS although no delivery had ever failed.
--
-- Now the rescuer refunds that attempt (attempts counts deliveries that
-- were tried and failed, or are in flight) and counts the orphaning here
-- instead, against its own, larger budget (GOODFELLAZ17_MAX_ORPHANINGS): a
-- task that kills every worker that takes it (a poison pill) still ends in
-- the dead-letter queue, with a last_error that says so. A drain gives a
-- task fresh delivery attempts; its orphanings are its history and stay.
--
-- Adding a column with a constant default rewrites nothing (PostgreSQL 11+).

ALTER TABLE order_tasks
    ADD COLUMN orphanings integer NOT NULL DEFAULT 0 CHECK (orphanings >= 0);
