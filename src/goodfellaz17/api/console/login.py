"""The console's sign-in forms: log in with an API key, log out.

The key travels only in the login form's POST, over https or on a loopback
address, and is never echoed back or stored in the browser (session.py
issues the cookie). Every other console route needs the session these open.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from goodfellaz17.api.console.deps import Console, ConsoleState, SignedInForm
from goodfellaz17.api.console.pages import render, safe_next, see_other
from goodfellaz17.api.console.session import Transport, transport_of
from goodfellaz17.api.deps import Context, Repo, Throttled

router = APIRouter(prefix="/console", include_in_schema=False)

MAX_KEY_LENGTH = 1000


def _login_page(
    request: Request,
    cons: ConsoleState,
    next_url: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    nonce, signed = cons.sessions.new_login_nonce()
    transport = transport_of(request)
    response = render(
        request,
        cons,
        "login.html",
        {
            "next": next_url,
            "nonce": nonce,
            "error": error,
            "refused_transport": transport is Transport.REFUSED,
        },
        status_code=status_code,
    )
    if transport is not Transport.REFUSED:
        cons.sessions.set_login_cookie(response, request, signed)
    return response


@router.get("/login", name="console_login")
async def login_form(
    request: Request, cons: Console, repo: Repo, next: str | None = None
) -> Response:
    if await cons.sessions.session_of(request, repo) is not None:
        return see_other(safe_next(next))
    return _login_page(request, cons, safe_next(next))


@router.post("/login", name="console_login_submit")
async def login(
    request: Request,
    cons: Console,
    ctx: Context,
    repo: Repo,
    api_key: Annotated[str, Form(max_length=MAX_KEY_LENGTH)] = "",
    nonce: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/console",
) -> Response:
    next_url = safe_next(next)
    if transport_of(request) is Transport.REFUSED:
        return _login_page(
            request,
            cons,
            next_url,
            error="Refused: the console accepts a key only over https (or on a loopback address).",
            status_code=400,
        )
    if not cons.sessions.login_nonce_matches(request, nonce):
        return _login_page(
            request,
            cons,
            next_url,
            error="The login form expired or was not sent from this console. Try again.",
            status_code=403,
        )
    try:
        ctx.refuse_if_throttled(request, "console")
    except Throttled as throttled:
        refusal = _login_page(
            request,
            cons,
            next_url,
            error="Too many failed attempts from this address. Try again in "
            f"{throttled.retry_after_seconds} s.",
            status_code=429,
        )
        refusal.headers["Retry-After"] = str(throttled.retry_after_seconds)
        return refusal
    opened = await cons.sessions.open(repo, api_key.strip())
    if opened is None:
        ctx.record_auth_failure(request, "console", presented=bool(api_key.strip()))
        return _login_page(
            request, cons, next_url, error="That API key is not valid.", status_code=401
        )
    token, _session = opened
    response = see_other(next_url)
    cons.sessions.set_session_cookie(response, request, token)
    cons.sessions.clear_login_cookie(response, request)
    return response


@router.post("/logout", name="console_logout")
async def logout(request: Request, session: SignedInForm, cons: Console, repo: Repo) -> Response:
    await cons.sessions.close(repo, session)
    response = see_other("/console/login")
    cons.sessions.clear_session_cookie(response, request)
    return response
