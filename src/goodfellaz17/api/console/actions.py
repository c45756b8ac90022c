"""The console's forms: log in and out, and the operator's actions.

Each action runs the same service function as the admin API (so it is one
recorded transaction that keeps every invariant), behind `ActingOperator`:
a session, its CSRF token and an operator key. Order actions and disabling
a node first show a confirmation page that says what will happen, with the
numbers as they stand; the form on that page is the only way to act.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from goodfellaz17.api.console.deps import (
    ActingOperator,
    Console,
    ConsoleRefusal,
    ConsoleState,
    SignedInForm,
    Viewer,
)
from goodfellaz17.api.console.pages import (
    done_notice,
    fleet_context,
    overview_context,
    page,
    parse_node_id,
    parse_order_id,
    refused,
    render,
)
from goodfellaz17.api.console.session import Transport, transport_of
from goodfellaz17.api.deps import AppSettings, Context, Repo, Throttled
from goodfellaz17.db.repository import Repository
from goodfellaz17.errors import InvalidInput, ServiceError
from goodfellaz17.services import chaos, nodes, operations, progress

router = APIRouter(prefix="/console", include_in_schema=False)

MAX_KEY_LENGTH = 1000


def safe_next(raw: str | None) -> str:
    """Only a path of the console itself: never another site (no open redirect)."""
    if (
        raw
        and raw.startswith("/console")
        and not raw.startswith("//")
        and "\\" not in raw
        and raw.isprintable()
    ):
        return raw
    return "/console"


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---------------------------------------------------------------- login / logout


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


# ---------------------------------------------------------------- order actions


ActionFn = Callable[..., Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class OrderAction:
    slug: str
    title: str
    button: str
    run: ActionFn
    takes_force: bool


ORDER_ACTIONS = {
    a.slug: a
    for a in (
        OrderAction("retry-now", "Retry now", "Retry now", operations.retry_now, False),
        OrderAction(
            "drain-dead-letters",
            "Drain dead letters",
            "Drain dead letters",
            operations.drain_dead_letters,
            False,
        ),
        OrderAction(
            "force-complete", "Force-complete", "Force-complete", operations.force_complete, True
        ),
        OrderAction("cancel", "Cancel remaining tasks", "Cancel tasks", operations.cancel, True),
    )
}


def _units(prog: dict[str, Any], *statuses: str) -> tuple[int, int]:
    tasks = sum(prog["tasks"][s]["tasks"] for s in statuses)
    units = sum(prog["tasks"][s]["units"] for s in statuses)
    return tasks, units


def describe(slug: str, prog: dict[str, Any]) -> dict[str, Any]:
    """What the action will do to this order, in the operator's words, with
    the numbers as they stand; `noop` when it would change nothing."""
    executing, executing_units = _units(prog, "EXECUTING")
    completed = prog["status"] == "COMPLETED"
    lines: list[str] = []
    noop = False
    force_note: str | None = None
    if slug == "retry-now":
        n, u = _units(prog, "FAILED_RETRYING")
        noop = n == 0
        lines.append(
            f"{n:,} task(s) waiting to retry (FAILED_RETRYING, {u:,} units) become due now "
            "instead of waiting out their backoff; a worker claims them at once."
        )
    elif slug == "drain-dead-letters":
        n, u = _units(prog, "FAILED_PERMANENT")
        noop = n == 0
        lines.append(
            f"{n:,} dead-letter task(s) ({u:,} units) move from FAILED_PERMANENT to "
            "FAILED_RETRYING with attempts reset to 0, and are retried now."
        )
        if n:
            lines.append(f"failed_permanent_plays drops by {u:,}.")
        if completed and n:
            lines.append("The order is COMPLETED: it becomes PROCESSING again.")
    elif slug == "force-complete":
        n, u = _units(prog, "PENDING", "FAILED_RETRYING", "EXECUTING")
        noop = completed
        lines.append(
            f"The order becomes COMPLETED with {prog['delivered']:,} of "
            f"{prog['quantity']:,} units delivered. Its {n:,} open task(s) ({u:,} units) "
            "go to the dead-letter queue and will not be delivered."
        )
        lines.append("Do this only when the customer agreed to a partial delivery.")
        if executing:
            force_note = (
                f"{executing:,} task(s) ({executing_units:,} units) are EXECUTING right now: "
                "their units may be delivered without being counted. Without force the "
                "action is refused while they run."
            )
    elif slug == "cancel":
        n, u = _units(prog, "PENDING", "FAILED_RETRYING")
        noop = n == 0 and executing == 0
        lines.append(
            f"{n:,} task(s) ({u:,} units) that are PENDING or FAILED_RETRYING go to the "
            "dead-letter queue with last_error 'cancelled by operator …'."
        )
        lines.append(
            "The order stays PROCESSING until its dead letters are drained or it is "
            "force-completed."
        )
        if executing:
            force_note = (
                f"{executing:,} task(s) ({executing_units:,} units) are EXECUTING: without "
                "force the action is refused while they run; with force they are cancelled "
                "too (a late completion then changes nothing)."
            )
    if completed and slug == "force-complete":
        lines = ["The order is already COMPLETED: there is nothing to force."]
    return {"lines": lines, "noop": noop, "force_note": force_note}


async def _confirm_page(
    request: Request,
    cons: ConsoleState,
    repo: Repository,
    order_id: uuid.UUID,
    action: OrderAction,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    try:
        prog = await progress.order_progress(repo, order_id)
    except ServiceError as exc:
        raise refused(exc) from None
    response = await page(
        request,
        cons,
        repo,
        "confirm_order.html",
        {
            "action": action,
            "progress": prog,
            "order_id": str(order_id),
            "effect": describe(action.slug, prog),
            "error": error,
        },
    )
    response.status_code = status_code
    return response


def _order_action(slug: str) -> OrderAction:
    action = ORDER_ACTIONS.get(slug)
    if action is None:
        raise ConsoleRefusal(404, "No such action", f"{slug!r} is not an order action.")
    return action


@router.get("/orders/{order_id}/actions/{slug}", name="console_order_confirm")
async def confirm_order_action(
    request: Request, order_id: str, slug: str, _: Viewer, cons: Console, repo: Repo
) -> HTMLResponse:
    return await _confirm_page(request, cons, repo, parse_order_id(order_id), _order_action(slug))


@router.post("/orders/{order_id}/actions/{slug}", name="console_order_act")
async def run_order_action(
    request: Request,
    order_id: str,
    slug: str,
    session: ActingOperator,
    cons: Console,
    repo: Repo,
    force: Annotated[str | None, Form()] = None,
) -> Response:
    oid = parse_order_id(order_id)
    action = _order_action(slug)
    kwargs: dict[str, Any] = {"actor": session.principal.actor}
    if action.takes_force:
        kwargs["force"] = force == "on"
    try:
        result = await action.run(repo, oid, **kwargs)
    except ServiceError as exc:
        if exc.status_code == 404:
            raise refused(exc) from None
        return await _confirm_page(
            request, cons, repo, oid, action, error=exc.message, status_code=exc.status_code
        )
    # What was done is told on the order's page from the session, never from
    # the query string (where anyone could write any "done" they like).
    back = f"/console/orders/{oid}"
    notice = done_notice(slug, tasks=result["tasksAffected"], units=result["unitsAffected"])
    await cons.sessions.leave_notice(repo, session, back, notice)
    return see_other(back)


# ---------------------------------------------------------------- chaos


def _number(raw: str, field: str, label: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"{label} must be a number", field=field) from None


@router.post("/chaos/enable", name="console_chaos_enable")
async def enable_chaos(
    request: Request,
    session: ActingOperator,
    cons: Console,
    repo: Repo,
    settings: AppSettings,
    failure_rate_percent: Annotated[str, Form(max_length=20)] = "0",
    latency_ms: Annotated[str, Form(max_length=20)] = "0",
    ttl_minutes: Annotated[str, Form(max_length=20)] = "",
    worker_paused: Annotated[str | None, Form()] = None,
) -> Response:
    try:
        rate = _number(failure_rate_percent or "0", "failureRate", "Failure rate") / 100
        latency = _number(latency_ms or "0", "latencyMs", "Latency")
        if not latency.is_integer():
            raise InvalidInput("Latency must be a whole number of ms", field="latencyMs")
        ttl = _number(ttl_minutes, "ttlSeconds", "Expiry") * 60 if ttl_minutes else None
        await chaos.enable_chaos(
            repo,
            settings,
            actor=session.principal.actor,
            worker_paused=worker_paused == "on",
            failure_rate=rate,
            latency_ms=int(latency),
            ttl_seconds=ttl,
        )
    except ServiceError as exc:
        context = await overview_context(repo, settings)
        context["chaos_defaults"] = {
            "ttl_minutes": ttl_minutes,
            "allowed": settings.chaos_allowed,
            "failure_rate_percent": failure_rate_percent,
            "latency_ms": latency_ms,
            "worker_paused": worker_paused == "on",
        }
        context["chaos_error"] = exc.message
        response = await page(request, cons, repo, "overview.html", context)
        response.status_code = exc.status_code
        return response
    return see_other("/console")


@router.post("/chaos/disable", name="console_chaos_disable")
async def disable_chaos(
    session: ActingOperator,
    repo: Repo,
    next: Annotated[str, Form(max_length=2000)] = "/console",
) -> Response:
    await chaos.disable_chaos(repo, actor=session.principal.actor)
    return see_other(safe_next(next))


# ---------------------------------------------------------------- nodes


@router.post("/nodes", name="console_node_add")
async def add_node(
    request: Request,
    session: ActingOperator,
    cons: Console,
    repo: Repo,
    settings: AppSettings,
    provider: Annotated[str, Form(max_length=40)] = "",
    node_identifier: Annotated[str, Form(max_length=400)] = "",
    endpoint: Annotated[str, Form(max_length=4000)] = "",
    capacity_per_hour: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    form = {
        "provider": provider,
        "node_identifier": node_identifier,
        "endpoint": endpoint,
        "capacity_per_hour": capacity_per_hour,
    }
    try:
        capacity: int | None = None
        if capacity_per_hour.strip():
            try:
                capacity = int(capacity_per_hour.replace(",", "").replace("_", "").strip())
            except ValueError:
                raise InvalidInput(
                    "capacity must be a whole number of units per hour", field="capacityPerHour"
                ) from None
        await nodes.register_node(
            repo,
            provider=provider,
            node_identifier=node_identifier.strip(),
            endpoint=endpoint.strip() or None,
            capacity_per_hour=capacity,
            actor=session.principal.actor,
        )
    except ServiceError as exc:
        context = await fleet_context(repo, settings)
        context.update(form=form, node_error=exc.message)
        response = await page(request, cons, repo, "workers.html", context)
        response.status_code = exc.status_code
        return response
    return see_other("/console/workers")


async def _node(repo: Repository, node_id: int) -> dict[str, Any]:
    for node in await nodes.list_nodes(repo):
        if node["id"] == node_id:
            return node
    raise ConsoleRefusal(404, "No such node", f"There is no node {node_id}.")


@router.get("/nodes/{node_id}/disable", name="console_node_confirm_disable")
async def confirm_disable_node(
    request: Request, node_id: str, _: Viewer, cons: Console, repo: Repo
) -> HTMLResponse:
    node = await _node(repo, parse_node_id(node_id))
    return await page(request, cons, repo, "confirm_node.html", {"node": node})


@router.post("/nodes/{node_id}/disable", name="console_node_disable")
async def disable_node(node_id: str, session: ActingOperator, repo: Repo) -> Response:
    try:
        await nodes.set_node_enabled(
            repo, parse_node_id(node_id), enabled=False, actor=session.principal.actor
        )
    except ServiceError as exc:
        raise refused(exc) from None
    return see_other("/console/workers")


@router.post("/nodes/{node_id}/enable", name="console_node_enable")
async def enable_node(node_id: str, session: ActingOperator, repo: Repo) -> Response:
    try:
        await nodes.set_node_enabled(
            repo, parse_node_id(node_id), enabled=True, actor=session.principal.actor
        )
    except ServiceError as exc:
        raise refused(exc) from None
    return see_other("/console/workers")
