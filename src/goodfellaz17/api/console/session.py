"""Console sessions: a random id in a signed cookie, the session itself in
the database, and its CSRF token.

The operator pastes an API key into the login form once. The console then
keeps a session cookie that holds neither the key nor anything derived from
it: only a random session id, signed with itsdangerous under the session
secret (so a forged or garbled cookie is refused without a database read).
The session's row (`console_sessions`, keyed by the SHA-256 of the id) says
which configured key opened it, as an HMAC under the same secret, and when it
was opened and last used. Every request re-checks the signature, that the row
exists (a logout deletes it), the idle timeout and the absolute lifetime (by
the database's clock), and takes the role from the configuration, so
removing a key ends its sessions at once and changing its role changes
theirs. The CSRF token is an HMAC of the session id: it needs no storage and
dies with the session.

The secret is random (GOODFELLAZ17_SESSION_SECRET, required in production;
generated once into the data folder in development, see secret.py), never
derived from the API keys: a cookie, held by whoever it belongs to, gives no
way to test guesses of other keys offline. Replicas that share the secret
share sessions; changing it signs everybody out.

Transport: the cookie is `Secure` (and named with the `__Host-` prefix)
whenever the request came over https, including behind a TLS proxy that
uvicorn trusts (FORWARDED_ALLOW_IPS). Over plain http the console only logs
in a client on a loopback address (a local browser, an SSH tunnel, the
tests), where a cookie without `Secure` never crosses a network; from
anywhere else, plain http is refused and the key is never accepted.

This module never logs, and nothing it returns contains the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from goodfellaz17.api.auth import KeyRing, Principal, key_fingerprint
from goodfellaz17.db.repository import Repository
from goodfellaz17.services.nodes import is_loopback
from goodfellaz17.settings import ApiKey, Role

LOGIN_FORM_MAX_AGE_SECONDS = 3600
MAX_SESSION_ID_LENGTH = 100
# A session's last use is recorded at most this often (and at most every
# tenth of the idle timeout): a click costs a write once a minute at most.
TOUCH_AFTER_SECONDS = 60.0


class Transport(StrEnum):
    HTTPS = "https"
    LOOPBACK_HTTP = "loopback-http"
    REFUSED = "refused"  # plain http from another host: the key would travel in clear


def transport_of(request: Request) -> Transport:
    if request.url.scheme == "https":
        return Transport.HTTPS
    client = request.client.host if request.client else ""
    return Transport.LOOPBACK_HTTP if client and is_loopback(client) else Transport.REFUSED


def _cookie_name(base: str, transport: Transport) -> str:
    # __Host-: the browser accepts it only with Secure, Path=/ and no Domain.
    return f"__Host-{base}" if transport is Transport.HTTPS else base


SESSION_COOKIE = "gf_console"
LOGIN_COOKIE = "gf_console_login"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    principal: Principal
    csrf_token: str
    id_hash: str  # the row's key: the SHA-256 of the id in the cookie

    @property
    def may_act(self) -> bool:
        return self.principal.may(Role.OPERATOR)


def _key_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionKeeper:
    """Opens, reads and closes console sessions for one set of API keys."""

    def __init__(
        self,
        keys: list[ApiKey],
        keyring: KeyRing,
        secret: bytes,
        *,
        idle_seconds: float,
        max_seconds: float,
    ) -> None:
        self._keyring = keyring
        self._secret = secret
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._bindings: dict[str, tuple[Role, str]] = {}
        for key in keys:
            digest = _key_digest(key.secret)
            self._bindings[self._bind(digest)] = (key.role, key_fingerprint(digest))
        self._sessions = URLSafeTimedSerializer(secret, salt="console-session")
        self._logins = URLSafeTimedSerializer(secret, salt="console-login")

    def _bind(self, digest: bytes) -> str:
        return hmac.new(self._secret, b"key-binding:" + digest, hashlib.sha256).hexdigest()[:32]

    def _csrf(self, session_id: str) -> str:
        mac = hmac.new(self._secret, b"csrf:" + session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def _touch_after(self) -> float:
        return min(TOUCH_AFTER_SECONDS, self.idle_seconds / 10)

    # ------------------------------------------------------------ sessions

    async def open(self, repo: Repository, presented: str) -> tuple[str, ConsoleSession] | None:
        """A new session (and its signed cookie value) for a valid key, or None."""
        principal = self._keyring.authenticate(presented)
        if principal is None:
            return None
        session_id = secrets.token_urlsafe(32)
        id_hash = _id_hash(session_id)
        await repo.console_session_open(
            id_hash=id_hash,
            key_binding=self._bind(_key_digest(presented)),
            idle_seconds=self.idle_seconds,
            max_seconds=self.max_seconds,
        )
        session = ConsoleSession(principal, self._csrf(session_id), id_hash)
        return self._sessions.dumps(session_id), session

    async def read(
        self, repo: Repository, token: str | None, *, touch: bool = True
    ) -> ConsoleSession | None:
        """The live session a cookie names, or None. `touch` records the use
        (an operator's request), which postpones the idle timeout."""
        if not token:
            return None
        try:
            session_id: Any = self._sessions.loads(token, max_age=int(self.max_seconds))
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(session_id, str) or len(session_id) > MAX_SESSION_ID_LENGTH:
            return None
        id_hash = _id_hash(session_id)
        binding = await repo.console_session_get(
            id_hash=id_hash,
            idle_seconds=self.idle_seconds,
            max_seconds=self.max_seconds,
            touch=touch,
            touch_after_seconds=self._touch_after(),
        )
        known = None if binding is None else self._bindings.get(binding)
        if known is None:  # no live session, or its key was removed from the configuration
            return None
        role, fingerprint = known
        principal = Principal(role=role, fingerprint=fingerprint)
        return ConsoleSession(principal, self._csrf(session_id), id_hash)

    async def close(self, repo: Repository, session: ConsoleSession) -> None:
        """Revoke the session: its cookie, wherever a copy is, opens nothing."""
        await repo.console_session_delete(id_hash=session.id_hash)

    async def session_of(
        self, request: Request, repo: Repository, *, touch: bool = True
    ) -> ConsoleSession | None:
        transport = transport_of(request)
        if transport is Transport.REFUSED:
            return None
        token = request.cookies.get(_cookie_name(SESSION_COOKIE, transport))
        return await self.read(repo, token, touch=touch)

    async def leave_notice(
        self, repo: Repository, session: ConsoleSession, path: str, message: str
    ) -> None:
        """A one-shot notice for the next view of `path` in this session."""
        await repo.console_session_flash_set(id_hash=session.id_hash, path=path, message=message)

    async def take_notice(self, repo: Repository, session: ConsoleSession, path: str) -> str | None:
        return await repo.console_session_flash_take(id_hash=session.id_hash, path=path)

    def set_session_cookie(self, response: Response, request: Request, token: str) -> None:
        _set_cookie(response, request, SESSION_COOKIE, token, int(self.max_seconds))

    def clear_session_cookie(self, response: Response, request: Request) -> None:
        _clear_cookie(response, request, SESSION_COOKIE)

    # ------------------------------------------------------------ login form CSRF

    def new_login_nonce(self) -> tuple[str, str]:
        """(nonce for the form, signed cookie value): a double-submit pair that
        stops another site from logging a browser in with the other site's key."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._logins.dumps(nonce)

    def login_nonce_matches(self, request: Request, submitted: str | None) -> bool:
        transport = transport_of(request)
        signed = request.cookies.get(_cookie_name(LOGIN_COOKIE, transport))
        if not signed or not submitted:
            return False
        try:
            nonce: Any = self._logins.loads(signed, max_age=LOGIN_FORM_MAX_AGE_SECONDS)
        except BadSignature:
            return False
        return isinstance(nonce, str) and hmac.compare_digest(
            nonce.encode(), submitted.encode("utf-8", "surrogateescape")
        )

    def set_login_cookie(self, response: Response, request: Request, signed: str) -> None:
        _set_cookie(response, request, LOGIN_COOKIE, signed, LOGIN_FORM_MAX_AGE_SECONDS)

    def clear_login_cookie(self, response: Response, request: Request) -> None:
        _clear_cookie(response, request, LOGIN_COOKIE)


def csrf_matches(session: ConsoleSession, submitted: str | None) -> bool:
    if not submitted:
        return False
    return hmac.compare_digest(
        session.csrf_token.encode(), submitted.encode("utf-8", "surrogateescape")
    )


def _set_cookie(response: Response, request: Request, base: str, value: str, age: int) -> None:
    transport = transport_of(request)
    # Path=/ is what __Host- demands; the API never reads cookies, so /api/
    # gains nothing from receiving it.
    response.set_cookie(
        _cookie_name(base, transport),
        value,
        max_age=age,
        path="/",
        secure=transport is Transport.HTTPS,
        httponly=True,
        samesite="strict",
    )


def _clear_cookie(response: Response, request: Request, base: str) -> None:
    transport = transport_of(request)
    response.delete_cookie(
        _cookie_name(base, transport),
        path="/",
        secure=transport is Transport.HTTPS,
        httponly=True,
        samesite="strict",
    )
