-- Layout "history": open tasks in their own table (the claim indexes, the
-- foreign key); a completion deletes the rows and inserts them into
-- tasks_history in the same statement. tasks_history is partitioned by RANGE
-- of finished_at like listpart's finished partition, so the two layouts
-- differ only in how a row leaves the open table (an explicit DELETE ...
-- INSERT against row movement). The accounting trigger reads the rows that
-- arrive in the history.
CREATE TABLE tasks (LIKE task_columns INCLUDING DEFAULTS);
CREATE TABLE tasks_history (LIKE task_columns INCLUDING DEFAULTS)
    PARTITION BY RANGE (finished_at);
SELECT create_day_partitions('tasks_history', current_date - 31, current_date + 1);

-- @indexes: built after the history is loaded
SELECT add_open_task_indexes('tasks');
SELECT add_finished_task_indexes('tasks_history');

CREATE FUNCTION tasks_history_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM add_delivered_units(
        ARRAY(SELECT n.order_id FROM new_rows n WHERE n.status = 'COMPLETED' ORDER BY n.id),
        ARRAY(SELECT n.quantity FROM new_rows n WHERE n.status = 'COMPLETED' ORDER BY n.id));
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_history_account AFTER INSERT ON tasks_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_history_account();
