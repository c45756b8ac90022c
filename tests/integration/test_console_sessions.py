"""Console sessions are kept server-side: logout revokes them, they end after
an idle timeout and at an absolute lifetime (database time, moved by hand
here instead of waiting), their cookie is signed with a random secret that
says nothing about the API keys, and the notices they carry come from the
server, never from the query string."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path
from typing import Any

import psycopg
import pytest
from itsdangerous import BadSignature, URLSafeTimedSerializer

from goodfellaz17.api.app import create_app
from goodfellaz17.api.auth import KeyRing
from goodfellaz17.api.console.session import SessionKeeper
from goodfellaz17.db.repository import Repository
from goodfellaz17.settings import Role, Settings, parse_api_keys
from tests.conftest import OPERATOR_KEY, ORDERS_KEY, READ_KEY, SESSION_SECRET, make_settings
from tests.helpers import insert_order, set_task_states
from tests.integration.console_helpers import client_for, csrf_of, signed_in

COOKIE = "gf_console"


def sessions(sql: psycopg.Connection[Any]) -> int:
    row = sql.execute("SELECT count(*) FROM console_sessions").fetchone()
    assert row is not None
    return int(row[0])


# ---------------------------------------------------------------- revocation and lifetimes


async def test_logout_revokes_the_session_on_the_server(
    app: Any, sql: psycopg.Connection[Any]
) -> None:
    async with client_for(app) as operator:
        csrf = await signed_in(operator, OPERATOR_KEY)
        stolen = operator.cookies.get(COOKIE)
        assert stolen
        logout = await operator.post("/console/logout", data={"csrf_token": csrf})
        assert logout.status_code == 303
    sql.execute("UPDATE chaos_settings SET enabled = true, expires_at = now() + interval '1 h'")
    async with client_for(app) as thief:  # a copy of the cookie taken before the logout
        thief.cookies.set(COOKIE, stolen)
        assert (await thief.get("/console")).status_code == 303
        replay = await thief.post("/console/chaos/disable", data={"csrf_token": csrf})
        assert replay.status_code == 401
    assert sql.execute("SELECT enabled FROM chaos_settings").fetchone() == (True,)


async def test_a_session_ends_after_its_idle_timeout(
    client: Any, sql: psycopg.Connection[Any], settings: Settings
) -> None:
    await signed_in(client, READ_KEY)
    idle = settings.console_session_idle_seconds
    sql.execute(
        "UPDATE console_sessions SET last_seen_at = now() - make_interval(secs => %s)",
        (idle - 60,),
    )
    assert (await client.get("/console")).status_code == 200  # still within the timeout
    sql.execute(
        "UPDATE console_sessions SET last_seen_at = now() - make_interval(secs => %s)",
        (idle + 1,),
    )
    assert (await client.get("/console")).status_code == 303
    assert (await client.get("/console/partials/overview")).status_code == 401


async def test_activity_keeps_a_session_alive_but_auto_refresh_does_not(
    client: Any, sql: psycopg.Connection[Any], settings: Settings
) -> None:
    await signed_in(client, READ_KEY)
    idle = settings.console_session_idle_seconds

    def idle_for() -> float:
        row = sql.execute(
            "SELECT extract(epoch FROM now() - last_seen_at) FROM console_sessions"
        ).fetchone()
        assert row is not None
        return float(row[0])

    sql.execute(
        "UPDATE console_sessions SET last_seen_at = now() - make_interval(secs => %s)",
        (idle - 60,),
    )
    for _ in range(3):  # what a page left open does every few seconds
        assert (await client.get("/console/partials/overview")).status_code == 200
    assert idle_for() >= idle - 60
    assert (await client.get("/console/orders")).status_code == 200  # the operator clicks
    assert idle_for() < 5


async def test_a_session_ends_at_its_absolute_lifetime_however_active(
    client: Any, sql: psycopg.Connection[Any], settings: Settings
) -> None:
    await signed_in(client, OPERATOR_KEY)
    sql.execute(
        "UPDATE console_sessions SET created_at = now() - make_interval(secs => %s)",
        (settings.console_session_max_seconds + 1,),
    )
    assert (await client.get("/console")).status_code == 303


async def test_sessions_are_independent_and_expired_ones_are_cleared(
    app: Any, sql: psycopg.Connection[Any], settings: Settings
) -> None:
    async with client_for(app) as first, client_for(app) as second:
        csrf = await signed_in(first, OPERATOR_KEY)
        await signed_in(second, OPERATOR_KEY)
        assert sessions(sql) == 2
        assert (await first.post("/console/logout", data={"csrf_token": csrf})).status_code == 303
        assert (await second.get("/console")).status_code == 200  # only the one logged out
        sql.execute(
            "UPDATE console_sessions SET created_at = now() - make_interval(secs => %s)",
            (settings.console_session_max_seconds + 1,),
        )
        await signed_in(first, READ_KEY)
        assert sessions(sql) == 1  # a new login sweeps the expired


async def test_the_database_never_holds_the_session_cookie_or_the_key(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    await signed_in(client, OPERATOR_KEY)
    cookie = client.cookies.get(COOKIE)
    row = sql.execute("SELECT to_jsonb(s)::text FROM console_sessions s").fetchone()
    assert row is not None
    stored = row[0]
    assert cookie not in stored
    for part in cookie.split("."):
        assert part not in stored
    assert OPERATOR_KEY not in stored
    assert hashlib.sha256(OPERATOR_KEY.encode()).hexdigest() not in stored


# ---------------------------------------------------------------- the signing secret


def derived_secret(keys: list[str]) -> bytes:
    """The old derivation: a secret anyone holding the keys could compute."""
    digests = sorted(hashlib.sha256(k.encode()).digest() for k in keys)
    return hmac.new(
        b"goodfellaz17 console session secret v1", b"".join(digests), hashlib.sha256
    ).digest()


async def test_a_cookie_gives_no_offline_oracle_for_the_other_keys(client: Any) -> None:
    # The orders key's holder signs in and keeps its own cookie, then guesses
    # the operator key offline: with a secret derived from the keys, the right
    # guess verifies the cookie's signature (the audit found a weak key in 127
    # guesses). With a random secret, no guess verifies.
    await signed_in(client, ORDERS_KEY)
    cookie = client.cookies.get(COOKIE)
    guesses = ["operator", "test-operator-key", OPERATOR_KEY, OPERATOR_KEY + "!"]
    for guess in guesses:
        secret = derived_secret([READ_KEY, ORDERS_KEY, guess])
        with pytest.raises(BadSignature):
            URLSafeTimedSerializer(secret, salt="console-session").loads(cookie)


async def test_development_keeps_a_random_secret_in_the_data_folder(
    db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, data_dir=str(tmp_path / "data"))
    first = create_app(settings, db_url, run_worker=False)
    async with first.router.lifespan_context(first), client_for(first) as c:
        await signed_in(c, OPERATOR_KEY)
        cookie = c.cookies.get(COOKIE)
    kept = tmp_path / "data" / "console-session-secret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert len(kept.read_text().strip()) >= 64
    restarted = create_app(settings, db_url, run_worker=False)
    async with restarted.router.lifespan_context(restarted), client_for(restarted) as c:
        c.cookies.set(COOKIE, cookie)
        assert (await c.get("/console")).status_code == 200, "a restart logs nobody out"
    elsewhere = make_settings(db_url, data_dir=str(tmp_path / "other"))
    other = create_app(elsewhere, db_url, run_worker=False)
    async with other.router.lifespan_context(other), client_for(other) as c:
        c.cookies.set(COOKIE, cookie)
        assert (await c.get("/console")).status_code == 303, "another secret, another signer"


async def test_production_signs_with_the_configured_secret(db_url: str, tmp_path: Path) -> None:
    replicas = [
        create_app(
            make_settings(db_url, env="production", data_dir=str(tmp_path / f"r{n}")),
            db_url,
            run_worker=False,
        )
        for n in (1, 2)
    ]
    async with replicas[0].router.lifespan_context(replicas[0]), client_for(replicas[0]) as c:
        await signed_in(c, READ_KEY)
        cookie = c.cookies.get(COOKIE)
    assert not (tmp_path / "r1" / "console-session-secret").exists()
    async with replicas[1].router.lifespan_context(replicas[1]), client_for(replicas[1]) as c:
        c.cookies.set(COOKIE, cookie)
        assert (await c.get("/console")).status_code == 200, "replicas share the secret"
    other = make_settings(
        db_url, env="production", session_secret=SESSION_SECRET[::-1], data_dir=str(tmp_path)
    )
    rotated = create_app(other, db_url, run_worker=False)
    async with rotated.router.lifespan_context(rotated), client_for(rotated) as c:
        c.cookies.set(COOKIE, cookie)
        assert (await c.get("/console")).status_code == 303, "a new secret signs everyone out"


# ---------------------------------------------------------------- notices


async def test_a_notice_in_the_query_string_is_never_shown(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 1200)
    await signed_in(client, READ_KEY)
    page = await client.get(f"/console/orders/{order_id}?done=force-complete&tasks=999&units=15000")
    assert page.status_code == 200
    assert "Force-completed" not in page.text
    assert "15,000" not in page.text
    assert 'id="notice"' not in page.text


async def test_an_action_leaves_a_one_shot_notice_in_its_session(
    app: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 1200)
    set_task_states(sql, order_id, ["COMPLETED", "FAILED_PERMANENT", "FAILED_PERMANENT"])
    async with client_for(app) as operator, client_for(app) as bystander:
        csrf = await signed_in(operator, OPERATOR_KEY)
        await signed_in(bystander, OPERATOR_KEY)
        done = await operator.post(
            f"/console/orders/{order_id}/actions/drain-dead-letters", data={"csrf_token": csrf}
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/console/orders/{order_id}"
        elsewhere = await operator.get("/console/orders")
        assert 'id="notice"' not in elsewhere.text, "the notice waits for its own page"
        assert 'id="notice"' not in (await bystander.get(done.headers["location"])).text
        page = await operator.get(done.headers["location"])
        assert "Drained 2 dead-letter task(s) (800 units)" in page.text
        assert csrf_of(page.text) == csrf
        again = await operator.get(done.headers["location"])
        assert "Drained" not in again.text, "shown once"


# ---------------------------------------------------------------- the keeper itself

KEYS = "op-secret-0123456789:operator,read-secret-0123456789:read"
SECRET = b"k" * 64


def keeper(raw: str = KEYS, secret: bytes = SECRET) -> SessionKeeper:
    keys = parse_api_keys(raw)
    return SessionKeeper(keys, KeyRing(keys), secret, idle_seconds=1800, max_seconds=28800)


async def test_a_session_names_its_key_by_role_and_fingerprint_but_never_holds_it(
    repo: Repository,
) -> None:
    k = keeper()
    opened = await k.open(repo, "op-secret-0123456789")
    assert opened is not None
    token, session = opened
    assert session.principal.role is Role.OPERATOR
    digest = hashlib.sha256(b"op-secret-0123456789").hexdigest()
    assert session.principal.key_id == digest[:8]  # the API's actor fingerprint
    for leak in ("op-secret-0123456789", digest, digest[:16]):
        assert leak not in token
    again = await k.read(repo, token)
    assert again == session
    assert again.may_act
    read = await k.open(repo, "read-secret-0123456789")
    assert read is not None
    assert not read[1].may_act


@pytest.mark.parametrize("presented", ["", "nope", "op-secret-0123456789 ", "op-secret"])
async def test_only_configured_keys_open_sessions(repo: Repository, presented: str) -> None:
    assert await keeper().open(repo, presented) is None


async def test_tampered_foreign_and_expired_tokens_are_refused(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = keeper()
    opened = await k.open(repo, "read-secret-0123456789")
    assert opened is not None
    token = opened[0]
    assert await k.read(repo, token[:-2] + ("AA" if not token.endswith("AA") else "BB")) is None
    for garbage in ("", None, "x.y.z"):
        assert await k.read(repo, garbage) is None
    assert await keeper(secret=b"o" * 64).read(repo, token) is None  # another secret
    assert await keeper().read(repo, token) is not None  # a replica with the same secret
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + k.max_seconds + 5)
    assert await k.read(repo, token) is None


async def test_another_secret_cannot_forge_a_session(repo: Repository) -> None:
    # Whoever guesses the operator key but not the secret signs differently.
    forged = await keeper(secret=b"guessed" * 10).open(repo, "op-secret-0123456789")
    assert forged is not None
    assert await keeper().read(repo, forged[0]) is None


async def test_the_role_comes_from_the_configuration_not_the_cookie(repo: Repository) -> None:
    opened = await keeper("same-secret-0123456789:operator").open(repo, "same-secret-0123456789")
    assert opened is not None
    assert opened[1].may_act
    # The same key, now configured as read: the session goes on, as read.
    demoted = await keeper("same-secret-0123456789:read").read(repo, opened[0])
    assert demoted is not None
    assert demoted.principal.role is Role.READ
    assert not demoted.may_act
