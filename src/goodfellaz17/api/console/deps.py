"""The console's dependencies: who is signed in, and may this form act.

Every console route except the login form and the static files depends on
`Viewer` (a valid session, else the login page or 401) and every route that
changes something on `ActingOperator` (a valid session, the session's CSRF
token in the form, and an operator key, else 401 / 403). A route walk test
holds every route to this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from goodfellaz17.api.console.session import ConsoleSession, SessionKeeper, csrf_matches
from goodfellaz17.api.deps import Repo


@dataclass
class ConsoleState:
    sessions: SessionKeeper
    templates: Jinja2Templates


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, the rest get 401."""


class ConsoleRefusal(Exception):
    """A console request refused with an HTML page (or text for a partial)."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message


def get_console(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


Console = Annotated[ConsoleState, Depends(get_console)]


# The partials a page fetches by itself every few seconds: reading them is
# not the operator's activity, so it does not postpone the idle timeout.
AUTO_REFRESH_PREFIX = "/console/partials/"


async def signed_in(request: Request, console: Console, repo: Repo) -> ConsoleSession:
    touch = not request.url.path.startswith(AUTO_REFRESH_PREFIX)
    session = await console.sessions.session_of(request, repo, touch=touch)
    if session is None:
        raise LoginRequired
    request.state.console_session = session  # the templates show who is signed in
    return session


Viewer = Annotated[ConsoleSession, Depends(signed_in)]


async def _form_field(request: Request, name: str) -> str | None:
    form = await request.form()  # parsed once; the route's Form() fields reuse it
    value = form.get(name)
    return value if isinstance(value, str) else None


async def csrf_checked(request: Request, session: Viewer) -> ConsoleSession:
    """A form post from the console's own pages in this session."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise ConsoleRefusal(403, "Refused", "This form was sent from another site.")
    if not csrf_matches(session, await _form_field(request, "csrf_token")):
        raise ConsoleRefusal(
            403,
            "Form expired",
            "This form's CSRF token is missing or does not match your session. "
            "Reload the page and try again.",
        )
    return session


SignedInForm = Annotated[ConsoleSession, Depends(csrf_checked)]


async def acting_operator(session: SignedInForm) -> ConsoleSession:
    if not session.may_act:
        raise ConsoleRefusal(
            403,
            "Needs an operator key",
            f"You are signed in with a {session.principal.role.value} key, which may look "
            "but not act. Sign in with an operator key to do this.",
        )
    return session


ActingOperator = Annotated[ConsoleSession, Depends(acting_operator)]
