"""The ops console: server-rendered pages under /console for operators.

Jinja2 templates and static files (CSS, a small script, an icon) ship inside
this package and are served by the app itself: no CDN, no build step. The
pages sign in with the same API keys as the API into server-side sessions
(see session.py), read
through the same services, and act through the same service functions as
the admin API. `install_console(app, settings)` is the one call
create_app makes.

    pages.py          the pages and the partials they refresh (GET only)
    login.py          sign in and out
    order_actions.py  retry now, drain, force-complete, cancel (confirm first)
    fleet_actions.py  chaos on and off; add, disable, enable nodes
    views.py          number, time and chart formats for the templates
    deps.py, session.py  who is signed in, and may this form act

Only /console/login and /console/static/ answer without a session; the
static files are the console's own CSS, script and icon, nothing secret.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodfellaz17 import __version__
from goodfellaz17.api.auth import KeyRing
from goodfellaz17.api.console import fleet_actions, login, order_actions, pages, views
from goodfellaz17.api.console.deps import ConsoleRefusal, ConsoleState, LoginRequired
from goodfellaz17.api.console.secret import session_secret
from goodfellaz17.api.console.session import SessionKeeper
from goodfellaz17.settings import Settings

PREFIX = "/console"
PARTIALS = f"{PREFIX}/partials/"
STATIC = f"{PREFIX}/static"

# Scripts, styles and images only from the console itself; no inline script
# or style at all, no framing, forms post only back to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class ConsoleHeadersMiddleware:
    """Security headers on every console answer; pages and partials are
    never cached (they carry live numbers and a CSRF token)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC + "/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += _SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _templates() -> Jinja2Templates:
    folder = resources.files(__package__).joinpath("templates")
    templates = Jinja2Templates(directory=str(folder), context_processors=[_layout_context])
    templates.env.autoescape = True
    views.install_filters(templates.env)
    return templates


def _layout_context(request: Request) -> dict[str, object]:
    session = getattr(request.state, "console_session", None)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {
        "session": session,
        "csrf_token": session.csrf_token if session is not None else "",
        "may_act": bool(session is not None and session.may_act),
        "version": __version__,
        "path": request.url.path,
        "here": here,
        # where a form in a refreshed partial returns to: the page, not the partial
        "back": request.query_params.get("from") or here,
    }


def _wants_partial(request: Request) -> bool:
    return request.url.path.startswith(PARTIALS)


async def _on_login_required(request: Request, exc: Exception) -> Response:
    if request.method == "GET" and not _wants_partial(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)
    if _wants_partial(request):
        return PlainTextResponse("sign in first", status_code=401)
    return _error_page(request, 401, "Sign in first", "This needs a console session.")


async def _on_refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefusal)
    if _wants_partial(request):
        return PlainTextResponse(exc.message, status_code=exc.status_code)
    return _error_page(request, exc.status_code, exc.title, exc.message)


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    console: ConsoleState = request.app.state.console
    response: HTMLResponse = console.templates.TemplateResponse(
        request,
        "error.html",
        {"title": title, "message": message, "status": status, "chaos": None},
        status_code=status,
    )
    return response


def install_console(app: FastAPI, settings: Settings) -> None:
    """Mount the console's routes and static files on `app`."""
    sessions = SessionKeeper(
        settings.api_keys,
        KeyRing(settings.api_keys),
        session_secret(settings),
        idle_seconds=settings.console_session_idle_seconds,
        max_seconds=settings.console_session_max_seconds,
    )
    app.state.console = ConsoleState(sessions=sessions, templates=_templates())
    app.add_exception_handler(LoginRequired, _on_login_required)
    app.add_exception_handler(ConsoleRefusal, _on_refusal)
    app.add_middleware(ConsoleHeadersMiddleware)
    static = resources.files(__package__).joinpath("static")
    app.mount(STATIC, StaticFiles(directory=str(static)), name="console_static")
    app.include_router(pages.router)
    app.include_router(login.router)
    app.include_router(order_actions.router)
    app.include_router(fleet_actions.router)
