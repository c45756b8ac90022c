"""The console's order actions: retry now, drain dead letters,
force-complete, cancel.

Each first shows a confirmation page that says what will happen, with the
numbers as they stand; the form on that page is the only way to act. Acting
runs the same service function as the admin API (one recorded transaction
that keeps every invariant), behind `ActingOperator`: a session, its CSRF
token and an operator key.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from goodfellaz17.api.console.deps import (
    ActingOperator,
    Console,
    ConsoleRefusal,
    ConsoleState,
    Viewer,
)
from goodfellaz17.api.console.pages import done_notice, page, parse_order_id, refused, see_other
from goodfellaz17.api.deps import Repo
from goodfellaz17.db.repository import Repository
from goodfellaz17.errors import ServiceError
from goodfellaz17.services import operations, progress

router = APIRouter(prefix="/console", include_in_schema=False)


ActionFn = Callable[..., Awaitable[operations.ActionResult]]


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


def _units(prog: progress.OrderProgress, *statuses: str) -> tuple[int, int]:
    tally = prog.tally(*statuses)
    return tally.tasks, tally.units


def describe(slug: str, prog: progress.OrderProgress) -> dict[str, Any]:
    """What the action will do to this order, in the operator's words, with
    the numbers as they stand; `noop` when it would change nothing."""
    executing, executing_units = _units(prog, "EXECUTING")
    completed = prog.status == "COMPLETED"
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
            f"The order becomes COMPLETED with {prog.delivered:,} of "
            f"{prog.quantity:,} units delivered. Its {n:,} open task(s) ({u:,} units) "
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
    notice = done_notice(slug, tasks=result.tasks_affected, units=result.units_affected)
    await cons.sessions.leave_notice(repo, session, back, notice)
    return see_other(back)
