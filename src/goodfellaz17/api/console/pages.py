"""The console's pages and the partials their script refreshes (GET only).

Every route here depends on `Viewer`: without a session a page redirects to
the login form and a partial answers 401 (the script then reloads, which
lands on the login form). Nothing here changes anything. The forms
(login.py, order_actions.py, fleet_actions.py) render through the helpers
here, so a refused form shows the same page with its error.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from goodfellaz17.api.console import views
from goodfellaz17.api.console.deps import Console, ConsoleRefusal, ConsoleState, Viewer
from goodfellaz17.api.deps import AppSettings, Repo
from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.states import OrderStatus
from goodfellaz17.errors import ServiceError
from goodfellaz17.services import chaos, console, nodes, workers
from goodfellaz17.settings import Settings

router = APIRouter(prefix="/console", include_in_schema=False)

STATUS_FILTERS = [s.value for s in OrderStatus]


def render(
    request: Request,
    cons: ConsoleState,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    response: HTMLResponse = cons.templates.TemplateResponse(
        request, name, context, status_code=status_code
    )
    return response


def parse_node_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise ConsoleRefusal(404, "No such node", f"{raw!r} is not a node id.")
    return int(raw)


def parse_order_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ConsoleRefusal(404, "No such order", f"{raw!r} is not an order id.") from None


def refused(exc: ServiceError) -> ConsoleRefusal:
    titles = {404: "Not found", 409: "Conflict", 403: "Refused", 422: "Invalid input"}
    return ConsoleRefusal(exc.status_code, titles.get(exc.status_code, "Refused"), exc.message)


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
    """After a form post: the browser GETs `url` (a reload does not post again)."""
    return RedirectResponse(url, status_code=303)


# ---------------------------------------------------------------- page data


async def overview_context(repo: Repository, settings: Settings) -> dict[str, Any]:
    return {
        "fleet": await console.fleet_overview(repo, settings),
        "chart": views.chart(await console.delivered_per_minute(repo)),
    }


async def orders_context(
    repo: Repository, status: str | None, cursor: str | None
) -> dict[str, Any]:
    if status not in (None, "", *STATUS_FILTERS):
        raise ConsoleRefusal(
            404, "No such filter", f"Status must be one of {', '.join(STATUS_FILTERS)}."
        )
    try:
        page = await console.order_page(repo, status=status or None, cursor=cursor or None)
    except ServiceError as exc:
        raise refused(exc) from None
    return {"page": page, "filters": STATUS_FILTERS}


async def order_context(repo: Repository, order_id: uuid.UUID) -> dict[str, Any]:
    try:
        detail = await console.order_detail(repo, order_id)
    except ServiceError as exc:
        raise refused(exc) from None
    return {"detail": detail}


async def fleet_context(repo: Repository, settings: Settings) -> dict[str, Any]:
    return {
        "status": await workers.worker_status(repo, settings),
        "nodes": await nodes.list_nodes(repo),
    }


async def page(
    request: Request, cons: ConsoleState, repo: Repository, name: str, context: dict[str, Any]
) -> HTMLResponse:
    """A full page: the layout shows the chaos banner on every page."""
    context = {"chaos": await chaos.chaos_status(repo), **context}
    return render(request, cons, name, context)


# ---------------------------------------------------------------- pages


@router.get("", name="console_overview")
async def overview_page(
    request: Request, _: Viewer, cons: Console, repo: Repo, settings: AppSettings
) -> HTMLResponse:
    context = await overview_context(repo, settings)
    context["chaos_defaults"] = {
        "ttl_minutes": f"{settings.chaos_default_ttl_seconds / 60:g}",
        "allowed": settings.chaos_allowed,
    }
    return await page(request, cons, repo, "overview.html", context)


@router.get("/orders", name="console_orders")
async def orders_page(
    request: Request,
    _: Viewer,
    cons: Console,
    repo: Repo,
    status: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    context = await orders_context(repo, status, cursor)
    return await page(request, cons, repo, "orders.html", context)


@router.get("/orders/{order_id}", name="console_order")
async def order_page(
    request: Request, order_id: str, session: Viewer, cons: Console, repo: Repo
) -> HTMLResponse:
    context = await order_context(repo, parse_order_id(order_id))
    context["notice"] = await cons.sessions.take_notice(repo, session, request.url.path)
    return await page(request, cons, repo, "order.html", context)


@router.get("/workers", name="console_workers")
async def workers_page(
    request: Request, _: Viewer, cons: Console, repo: Repo, settings: AppSettings
) -> HTMLResponse:
    context = await fleet_context(repo, settings)
    context["form"] = {}
    return await page(request, cons, repo, "workers.html", context)


# ---------------------------------------------------------------- partials


@router.get("/partials/overview", name="console_partial_overview")
async def overview_partial(
    request: Request, _: Viewer, cons: Console, repo: Repo, settings: AppSettings
) -> HTMLResponse:
    fleet = await console.fleet_overview(repo, settings)
    return render(request, cons, "partials/overview.html", {"fleet": fleet})


@router.get("/partials/chart", name="console_partial_chart")
async def chart_partial(request: Request, _: Viewer, cons: Console, repo: Repo) -> HTMLResponse:
    chart = views.chart(await console.delivered_per_minute(repo))
    return render(request, cons, "partials/chart.html", {"chart": chart})


@router.get("/partials/chaos", name="console_partial_chaos")
async def chaos_partial(request: Request, _: Viewer, cons: Console, repo: Repo) -> HTMLResponse:
    state = await chaos.chaos_status(repo)
    return render(request, cons, "partials/chaos.html", {"chaos": state})


@router.get("/partials/orders", name="console_partial_orders")
async def orders_partial(
    request: Request,
    _: Viewer,
    cons: Console,
    repo: Repo,
    status: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    context = await orders_context(repo, status, cursor)
    return render(request, cons, "partials/orders.html", context)


@router.get("/partials/orders/{order_id}", name="console_partial_order")
async def order_partial(
    request: Request, order_id: str, _: Viewer, cons: Console, repo: Repo
) -> HTMLResponse:
    context = await order_context(repo, parse_order_id(order_id))
    return render(request, cons, "partials/order.html", context)


@router.get("/partials/workers", name="console_partial_workers")
async def workers_partial(
    request: Request, _: Viewer, cons: Console, repo: Repo, settings: AppSettings
) -> HTMLResponse:
    context = await fleet_context(repo, settings)
    return render(request, cons, "partials/workers.html", context)


# ---------------------------------------------------------------- notices

_DONE = {
    "retry-now": "Made {tasks} retrying task(s) ({units} units) due now.",
    "drain-dead-letters": "Drained {tasks} dead-letter task(s) ({units} units): they retry now.",
    "force-complete": (
        "Force-completed the order: {tasks} open task(s) ({units} units) dead-lettered."
    ),
    "cancel": "Cancelled {tasks} task(s) ({units} units): they are in the dead-letter queue.",
}


def done_notice(action: str, *, tasks: int, units: int) -> str:
    """What an order action did, in the operator's words."""
    return _DONE[action].format(tasks=f"{tasks:,}", units=f"{units:,}")
