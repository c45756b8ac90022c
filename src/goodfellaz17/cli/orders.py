"""`goodfellaz17 orders ...`: create, show and list orders, and the operator's
view of one order (progress, dead letters) and actions on it (retry now,
force-complete, cancel), the same service functions as the API.

Reads and actions go straight to the database; nothing here decides policy.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from goodfellaz17.cli.output import JsonOption, api_json, out, print_json, print_result
from goodfellaz17.cli.runtime import cli_actor, parse_uuid, run_with_repo, settings_or_exit
from goodfellaz17.db.repository import Repository

if TYPE_CHECKING:
    from goodfellaz17.services.operations import ActionResult
    from goodfellaz17.services.orders import Order

app = typer.Typer(help="Create and inspect orders.", no_args_is_help=True)

ForceOption = Annotated[bool, typer.Option("--force", help="also act on EXECUTING tasks")]


def _order_table(order: Order) -> Table:
    """The order's columns that matter to a person (--json has them all)."""
    table = Table(show_header=False, box=None)
    for key in (
        "id",
        "status",
        "quantity",
        "delivered",
        "failed_permanent_plays",
        "target",
        "backend",
        "task_count",
        "created_at",
        "completed_at",
    ):
        table.add_row(key, str(getattr(order, key)))
    return table


@app.command("create")
def orders_create(
    quantity: Annotated[int, typer.Option(help="units to deliver")],
    target: Annotated[str, typer.Option(help="where the units go (opaque)")],
    backend: Annotated[str, typer.Option(help="delivery backend")] = "simulated",
    idempotency_key: Annotated[str | None, typer.Option(help="dedupe retries")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an order and its tasks."""
    from goodfellaz17.services.orders import create_order

    settings = settings_or_exit()
    result = run_with_repo(
        settings,
        lambda repo: create_order(
            repo,
            settings,
            quantity=quantity,
            target=target,
            backend=backend,
            idempotency_key=idempotency_key,
        ),
    )
    if as_json:
        print_json(asdict(result.order))
    else:
        out.print(_order_table(result.order))


@app.command("show")
def orders_show(order_id: str, as_json: JsonOption = False) -> None:
    """Show one order."""
    from goodfellaz17.services.orders import get_order

    oid = parse_uuid(order_id, "ORDER_ID")
    settings = settings_or_exit()
    order = run_with_repo(settings, lambda repo: get_order(repo, oid))
    if as_json:
        print_json(asdict(order))
    else:
        out.print(_order_table(order))


@app.command("list")
def orders_list(
    status: Annotated[str | None, typer.Option(help="PENDING, PROCESSING or COMPLETED")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent orders."""
    from goodfellaz17.services.orders import list_orders

    settings = settings_or_exit()
    listing = run_with_repo(
        settings, lambda repo: list_orders(repo, status=status, limit=limit, cursor=None)
    )
    if as_json:
        print_json([asdict(o) for o in listing.orders])
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=36)  # ids are for copying: never cut
    for header in ("status", "quantity", "delivered", "dead-lettered", "created"):
        table.add_column(header)
    for o in listing.orders:
        table.add_row(
            str(o.id),
            o.status,
            str(o.quantity),
            str(o.delivered),
            str(o.failed_permanent_plays),
            o.created_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@app.command("progress")
def orders_progress(order_id: str, as_json: JsonOption = False) -> None:
    """Tasks and units per status, percent, rate, ETA and age of one order."""
    from goodfellaz17.api.schemas import OrderProgressResponse
    from goodfellaz17.services.progress import order_progress

    oid = parse_uuid(order_id, "ORDER_ID")
    result = run_with_repo(settings_or_exit(), lambda repo: order_progress(repo, oid))
    data = api_json(OrderProgressResponse, result)
    tally = [{"status": s, **t} for s, t in data["tasks"].items()]
    print_result(data, as_json, title="progress", columns=["status", "tasks", "units"], items=tally)


@app.command("failed-tasks")
def orders_failed_tasks(
    order_id: str,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The order's dead-letter tasks, latest failure first."""
    from goodfellaz17.api.schemas import FailedTasksResponse
    from goodfellaz17.services.progress import failed_tasks

    oid = parse_uuid(order_id, "ORDER_ID")
    result = run_with_repo(settings_or_exit(), lambda repo: failed_tasks(repo, oid, limit=limit))
    data = api_json(FailedTasksResponse, result)
    columns = ["taskId", "seq", "quantity", "attempts", "orphanings", "executedAt", "lastError"]
    print_result(data, as_json, title="dead letters", columns=columns, items=data["tasks"])


ActionFn = Callable[[Repository, uuid.UUID, str], Awaitable["ActionResult"]]


def act_on_order(order_id: str, as_json: bool, action: ActionFn) -> None:
    """Run one operator action on the order and show what it did."""
    from goodfellaz17.api.schemas import OperatorActionResponse

    oid = parse_uuid(order_id, "ORDER_ID")
    actor = cli_actor()
    done = run_with_repo(settings_or_exit(), lambda repo: action(repo, oid, actor))
    data = api_json(OperatorActionResponse, done)
    print_result(data, as_json, title=data["action"])


@app.command("retry-now")
def orders_retry_now(order_id: str, as_json: JsonOption = False) -> None:
    """Make the order's FAILED_RETRYING tasks due now."""
    from goodfellaz17.services import operations

    act_on_order(
        order_id, as_json, lambda repo, oid, actor: operations.retry_now(repo, oid, actor=actor)
    )


@app.command("force-complete")
def orders_force_complete(
    order_id: str, force: ForceOption = False, as_json: JsonOption = False
) -> None:
    """Complete the order as it stands; open tasks are dead-lettered."""
    from goodfellaz17.services import operations

    act_on_order(
        order_id,
        as_json,
        lambda repo, oid, actor: operations.force_complete(repo, oid, actor=actor, force=force),
    )


@app.command("cancel")
def orders_cancel(order_id: str, force: ForceOption = False, as_json: JsonOption = False) -> None:
    """Dead-letter the order's remaining tasks (cancelled by operator)."""
    from goodfellaz17.services import operations

    act_on_order(
        order_id,
        as_json,
        lambda repo, oid, actor: operations.cancel(repo, oid, actor=actor, force=force),
    )
