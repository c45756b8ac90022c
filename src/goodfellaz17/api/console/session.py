"""Console sessions: a signed cookie opened with an API key, and its CSRF token.

The operator pastes an API key into the login form once; the console then
keeps a session cookie that holds neither the key nor a plain hash of it:
only a keyed hash (HMAC under the session secret) that names which
configured key opened it, a random CSRF token, and the time it was issued,
signed with itsdangerous. Every request re-checks the signature, the age
(at most SESSION_MAX_AGE_SECONDS) and that the key is still configured, and
takes the role from the configuration, so removing or changing a key ends
its sessions at once.

The session secret is derived from every configured key, so replicas with
the same keys accept each other's sessions and a restart logs nobody out,
while holding one key (say a read key) is not enough to forge a session.
Rotating the keys rotates the secret.

Transport: the cookie is `Secure` (and named with the `__Host-` prefix)
whenever the request came over https, including behind a TLS proxy that
uvicorn trusts (FORWARDED_ALLOW_IPS). Over plain http the console only logs
in a client on a loopback address (a local browser, an SSH tunnel, the
tests), where a cookie without `Secure` never crosses a network; from
anywhere else, plain http is refused and the key is never accepted.

This module never logs, and nothing it returns contains the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from goodfellaz17.api.auth import KeyRing, Principal
from goodfellaz17.services.nodes import is_loopback
from goodfellaz17.settings import ApiKey, Role

SESSION_MAX_AGE_SECONDS = 8 * 3600
LOGIN_FORM_MAX_AGE_SECONDS = 3600
_SECRET_CONTEXT = b"goodfellaz17 console session secret v1"


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

    @property
    def may_act(self) -> bool:
        return self.principal.may(Role.OPERATOR)


def _key_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class SessionKeeper:
    """Opens, reads and closes console sessions for one set of API keys."""

    def __init__(self, keys: list[ApiKey], keyring: KeyRing) -> None:
        self._keyring = keyring
        digests = sorted(_key_digest(k.secret) for k in keys)
        self._secret = hmac.new(_SECRET_CONTEXT, b"".join(digests), hashlib.sha256).digest()
        self._bindings: dict[str, tuple[Role, str]] = {}
        for key in keys:
            digest = _key_digest(key.secret)
            self._bindings[self._bind(digest)] = (key.role, digest.hex()[:8])
        self._sessions = URLSafeTimedSerializer(self._secret, salt="console-session")
        self._logins = URLSafeTimedSerializer(self._secret, salt="console-login")

    def _bind(self, digest: bytes) -> str:
        return hmac.new(self._secret, digest, hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------ sessions

    def open(self, presented: str) -> tuple[str, ConsoleSession] | None:
        """A signed session token for a valid key, or None (constant time)."""
        principal = self._keyring.authenticate(presented)
        if principal is None:
            return None
        csrf = secrets.token_urlsafe(32)
        token = self._sessions.dumps({"k": self._bind(_key_digest(presented)), "c": csrf})
        return token, ConsoleSession(principal=principal, csrf_token=csrf)

    def read(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        try:
            data: Any = self._sessions.loads(token, max_age=SESSION_MAX_AGE_SECONDS)
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        binding, csrf = data.get("k"), data.get("c")
        if not isinstance(binding, str) or not isinstance(csrf, str):
            return None
        known = self._bindings.get(binding)
        if known is None:  # the key was removed from the configuration
            return None
        role, key_id = known
        return ConsoleSession(principal=Principal(role=role, key_id=key_id), csrf_token=csrf)

    def session_of(self, request: Request) -> ConsoleSession | None:
        transport = transport_of(request)
        if transport is Transport.REFUSED:
            return None
        return self.read(request.cookies.get(_cookie_name(SESSION_COOKIE, transport)))

    def set_session_cookie(self, response: Response, request: Request, token: str) -> None:
        _set_cookie(response, request, SESSION_COOKIE, token, SESSION_MAX_AGE_SECONDS)

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
