-- Security hardening (issue 14): what the API, the console and the
-- invariant checks need so that no key can do more than its role allows.
--
-- 1. Console sessions live here, not only in a signed cookie, so that a
--    logout revokes them and they end after an idle timeout and at an
--    absolute lifetime (the database's clock decides both). The cookie holds
--    a random session id; this table holds only its SHA-256 (`id_hash`), so
--    reading the table does not let anyone take over a session. Which
--    configured key opened the session is `key_binding`, an HMAC of the
--    key's digest under the session signing secret: the role comes from the
--    configuration at every request, and a key removed from it ends its
--    sessions. `flash` is a one-shot notice for one page (what an action
--    did), shown from here and never from the query string.
CREATE TABLE console_sessions (
    id_hash       text        PRIMARY KEY CHECK (id_hash ~ '^[0-9a-f]{64}$'),
    key_binding   text        NOT NULL CHECK (length(key_binding) BETWEEN 16 AND 128),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    flash         jsonb
);
-- The sweep of expired sessions at each login.
CREATE INDEX console_sessions_created_at_idx ON console_sessions (created_at);

-- 2. Invariant checks say who ran them, and the orphan check has a scope of
--    its own, so that nothing a read key can do changes what the alerts see.
--    `source`: MONITOR (the API processes' periodic check), CLI (an operator
--    at a shell: the runbook's answer to InvariantCheckStale) or API (asked
--    for over HTTP, by any key). The metric, the console and so the alerts
--    read only full global checks by MONITOR or CLI; an orphan check used
--    to log itself as a passing GLOBAL check and turn the gauge to 0.
--    Rows from before this migration: their orphan checks become ORPHANS,
--    their full global checks count as MONITOR (the alert keeps what it saw
--    until the next periodic check), everything else API.
ALTER TABLE invariant_check_log DROP CONSTRAINT invariant_check_log_scope_check;
ALTER TABLE invariant_check_log ADD CONSTRAINT invariant_check_log_scope_check
    CHECK (scope IN ('ORDER', 'GLOBAL', 'ORPHANS'));
ALTER TABLE invariant_check_log ADD COLUMN source text NOT NULL DEFAULT 'API'
    CONSTRAINT invariant_check_log_source_check CHECK (source IN ('MONITOR', 'CLI', 'API'));
-- A global check lists at most 1,000 violations; this is how many it found.
ALTER TABLE invariant_check_log ADD COLUMN violation_count integer
    CHECK (violation_count >= 0);

UPDATE invariant_check_log SET scope = 'ORPHANS'
WHERE scope = 'GLOBAL' AND order_id IS NULL AND checks -> 0 ? 'name';
UPDATE invariant_check_log SET source = 'MONITOR'
WHERE scope = 'GLOBAL' AND order_id IS NULL;
-- The default stays API, the one no alert reads: a row written by hand, or
-- by a writer that forgot to say who it is, can never silence an alert.

-- The latest full global check, for the metric, the console and the reuse
-- of a recent check by the API: the newest entry of a small index, however
-- many per-order rows surround it.
CREATE INDEX invariant_check_log_global_idx ON invariant_check_log (check_timestamp DESC)
    WHERE scope = 'GLOBAL' AND order_id IS NULL;

-- 3. Idempotency keys belong to whoever used them. They were unique across
--    all callers, so one client could pre-claim another's keys (a 409 for
--    the other's own order). Now unique per `idempotency_scope`: the calling
--    API key's fingerprint (`key:<32 hex>`), `cli` for the command line, and
--    later a client's name for keys that name one. Keys used before this
--    migration keep the scope `legacy`, which every caller still matches, so
--    a retry that straddles the upgrade replays its order instead of
--    creating a second one.
ALTER TABLE orders ADD COLUMN idempotency_scope text
    CHECK (length(idempotency_scope) BETWEEN 1 AND 200);
UPDATE orders SET idempotency_scope = 'legacy' WHERE idempotency_key IS NOT NULL;
ALTER TABLE orders ADD CONSTRAINT orders_idempotency_scope_present
    CHECK ((idempotency_key IS NULL) = (idempotency_scope IS NULL));
ALTER TABLE orders DROP CONSTRAINT orders_idempotency_key_key;
ALTER TABLE orders ADD CONSTRAINT orders_idempotency_scope_key_key
    UNIQUE (idempotency_scope, idempotency_key);
