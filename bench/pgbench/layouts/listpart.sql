-- Layout "listpart": one logical table partitioned by LIST on status. Open
-- tasks live in tasks_open, which alone carries the claim indexes; finished
-- tasks live in tasks_finished, itself partitioned by RANGE of finished_at
-- (one partition a day, insert-only, dropped whole at retention). The
-- completing UPDATE moves each row across by row movement, and the same
-- statement-level trigger as the plain layout's sees the moved rows in its
-- transition tables (bench/layouts.py checks that first).
CREATE TABLE tasks (LIKE task_columns INCLUDING DEFAULTS) PARTITION BY LIST (status);
CREATE TABLE tasks_open PARTITION OF tasks
    FOR VALUES IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING');
CREATE TABLE tasks_finished PARTITION OF tasks
    FOR VALUES IN ('COMPLETED', 'FAILED_PERMANENT') PARTITION BY RANGE (finished_at);
SELECT create_day_partitions('tasks_finished', current_date - 31, current_date + 1);

-- @indexes: built after the history is loaded
SELECT add_open_task_indexes('tasks_open');
SELECT add_finished_task_indexes('tasks_finished');

CREATE TRIGGER tasks_account AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_account();
