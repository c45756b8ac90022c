-- Layout "plain": one table for open and finished tasks (today's shape).
-- A completion updates the row in place; the claim index and the index of
-- executing tasks are partial, the others hold every task ever.
CREATE TABLE tasks (LIKE task_columns INCLUDING DEFAULTS);

-- @indexes: built after the history is loaded
SELECT add_open_task_indexes('tasks');

CREATE TRIGGER tasks_account AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_account();
