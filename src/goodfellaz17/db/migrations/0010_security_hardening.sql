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
