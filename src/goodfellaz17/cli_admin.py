"""Operator commands of the `goodfellaz17` CLI, mirroring the admin API.

They read and change the database directly through the same service
functions as the API, so a shell session and an HTTP call do exactly the
same thing (and the same `--json`). Human tables by default (Rich).

Exit codes: 0 done, 1 an invariant check found violations, 2 an error
(one line on stderr). Registered on the app by `goodfellaz17.cli`.
"""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from goodfellaz17.cli import (
    JsonOption,
    app,
    fail,
    orders_app,
    out,
    parse_uuid,
    run_with_repo,
    settings_or_exit,
)
from goodfellaz17.db.repository import Repository
from goodfellaz17.settings import Settings

invariants_app = typer.Typer(help="Check the accounting invariants.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue.", no_args_is_help=True)
nodes_app = typer.Typer(help="Delivery nodes (capacity).", no_args_is_help=True)
chaos_app = typer.Typer(help="Chaos injection for every worker.", no_args_is_help=True)
app.add_typer(invariants_app, name="invariants")
app.add_typer(dlq_app, name="dlq")
app.add_typer(nodes_app, name="nodes")
app.add_typer(chaos_app, name="chaos")

ForceOption = Annotated[bool, typer.Option("--force", help="also act on EXECUTING tasks")]


def cli_actor() -> str:
    """Who did it, for operator_actions: the OS user at this shell."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def emit_json(data: Any) -> None:
    """The same JSON the API returns, on stdout, for scripts."""
    typer.echo(json.dumps(data, default=_json_default, indent=2))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _pairs(data: dict[str, Any], keys: list[str] | None = None, title: str | None = None) -> Table:
    table = Table(show_header=False, box=None, title=title, title_justify="left")
    for key in keys or [k for k, v in data.items() if not isinstance(v, list | dict)]:
        table.add_row(key, _fmt(data.get(key)))
    return table


def _rows(columns: list[str], items: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(*columns, title=title, title_justify="left")
    for item in items:
        table.add_row(*(_fmt(item.get(c)) for c in columns))
    return table


def _run(settings: Settings, action: Callable[[Repository], Awaitable[Any]]) -> Any:
    """Run against the database; log lines go to stderr so --json stays clean."""
    from goodfellaz17.logs import configure_logging

    configure_logging(settings, stream=sys.stderr)
    return run_with_repo(settings, action)


# ---------------------------------------------------------------- status, capacity


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Worker status: the fleet's totals and every recent worker."""
    from goodfellaz17.services.workers import worker_status

    settings = settings_or_exit()
    data = _run(settings, lambda repo: worker_status(repo, settings))
    if as_json:
        emit_json(data)
        return
    out.print(_pairs(data, title="workers"))
    columns = ["id", "state", "lastHeartbeatAt", "totalProcessed", "totalCompleted", "totalFailed"]
    out.print(_rows(columns, data["workers"]))


@app.command()
def capacity(
    quantity: Annotated[int, typer.Option(help="size of the hypothetical new order")] = 15_000,
    backend: Annotated[str, typer.Option(help="its backend")] = "simulated",
    as_json: JsonOption = False,
) -> None:
    """Healthy capacity against the backlog, and whether a new order fits in 2 h."""
    from goodfellaz17.services.capacity import capacity as capacity_of

    settings = settings_or_exit()
    data = _run(
        settings, lambda repo: capacity_of(repo, settings, quantity=quantity, backend=backend)
    )
    if as_json:
        emit_json(data)
        return
    out.print(_pairs(data, title="capacity"))
    columns = ["backend", "healthyNodes", "totalNodes", "healthyUnitsPerHour", "backlogUnits"]
    out.print(_rows([*columns, "backlogEtaSeconds"], data["backends"]))


# ---------------------------------------------------------------- invariants


@invariants_app.command("check")
def invariants_check(
    order_id: Annotated[str | None, typer.Argument(help="check this order only")] = None,
    check_all: Annotated[bool, typer.Option("--all", help="every order (default)")] = False,
    orphans: Annotated[bool, typer.Option("--orphans", help="tasks past their lease")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check one order, every order, or orphaned tasks; exit 1 on violations."""
    from goodfellaz17.services import invariants

    CLI = invariants.CheckSource.CLI
    if sum((order_id is not None, check_all, orphans)) > 1:
        fail("give one of ORDER_ID, --all or --orphans")
    settings = settings_or_exit()
    if order_id is not None:
        oid = parse_uuid(order_id, "ORDER_ID")
        data = _run(settings, lambda repo: invariants.check_order(repo, oid, source=CLI))
        rows, columns = data["checks"], ["name", "expected", "actual", "passed"]
    elif orphans:
        data = _run(settings, lambda repo: invariants.check_orphans(repo, source=CLI))
        rows = data["orphans"]
        columns = ["taskId", "orderId", "leaseOwner", "leaseExpiresAt", "overdueSeconds"]
    else:
        # An operator's check feeds the alerts (the runbook's InvariantCheckStale fix).
        data = _run(settings, lambda repo: invariants.check_all(repo, source=CLI))
        rows, columns = data["violations"], ["orderId", "check", "expected", "actual"]
    if as_json:
        emit_json(data)
    else:
        out.print(_pairs(data, title="invariants"))
        if rows:
            out.print(_rows(columns, rows))
    if not data["passed"]:
        raise typer.Exit(code=1)


# ---------------------------------------------------------------- orders


@orders_app.command("progress")
def orders_progress(order_id: str, as_json: JsonOption = False) -> None:
    """Tasks and units per status, percent, rate, ETA and age of one order."""
    from goodfellaz17.services.progress import order_progress

    oid = parse_uuid(order_id, "ORDER_ID")
    data = _run(settings_or_exit(), lambda repo: order_progress(repo, oid))
    if as_json:
        emit_json(data)
        return
    out.print(_pairs(data, title="progress"))
    tally = [{"status": s, **t} for s, t in data["tasks"].items()]
    out.print(_rows(["status", "tasks", "units"], tally))


@orders_app.command("failed-tasks")
def orders_failed_tasks(
    order_id: str,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The order's dead-letter tasks, latest failure first."""
    from goodfellaz17.services.progress import failed_tasks

    oid = parse_uuid(order_id, "ORDER_ID")
    data = _run(settings_or_exit(), lambda repo: failed_tasks(repo, oid, limit=limit))
    if as_json:
        emit_json(data)
        return
    out.print(_pairs(data, title="dead letters"))
    columns = ["taskId", "seq", "quantity", "attempts", "executedAt", "lastError"]
    out.print(_rows(columns, data["tasks"]))


def _act(
    order_id: str,
    as_json: bool,
    action: Callable[[Repository, uuid.UUID, str], Awaitable[dict[str, Any]]],
) -> None:
    oid = parse_uuid(order_id, "ORDER_ID")
    actor = cli_actor()
    data = _run(settings_or_exit(), lambda repo: action(repo, oid, actor))
    if as_json:
        emit_json(data)
    else:
        out.print(_pairs(data, title=data["action"]))


@orders_app.command("retry-now")
def orders_retry_now(order_id: str, as_json: JsonOption = False) -> None:
    """Make the order's FAILED_RETRYING tasks due now."""
    from goodfellaz17.services import operations

    _act(order_id, as_json, lambda repo, oid, actor: operations.retry_now(repo, oid, actor=actor))


@orders_app.command("force-complete")
def orders_force_complete(
    order_id: str, force: ForceOption = False, as_json: JsonOption = False
) -> None:
    """Complete the order as it stands; open tasks are dead-lettered."""
    from goodfellaz17.services import operations

    _act(
        order_id,
        as_json,
        lambda repo, oid, actor: operations.force_complete(repo, oid, actor=actor, force=force),
    )


@orders_app.command("cancel")
def orders_cancel(order_id: str, force: ForceOption = False, as_json: JsonOption = False) -> None:
    """Dead-letter the order's remaining tasks (cancelled by operator)."""
    from goodfellaz17.services import operations

    _act(
        order_id,
        as_json,
        lambda repo, oid, actor: operations.cancel(repo, oid, actor=actor, force=force),
    )


@dlq_app.command("drain")
def dlq_drain(order_id: str, as_json: JsonOption = False) -> None:
    """Send the order's dead letters back to the queue (attempts from 0, due now)."""
    from goodfellaz17.services import operations

    _act(
        order_id,
        as_json,
        lambda repo, oid, actor: operations.drain_dead_letters(repo, oid, actor=actor),
    )


# ---------------------------------------------------------------- nodes

NODE_COLUMNS = ["id", "provider", "nodeIdentifier", "capacityPerHour", "state", "healthy"]


@nodes_app.command("add")
def nodes_add(
    provider: Annotated[str, typer.Option(help="the backend: simulated or webhook")],
    identifier: Annotated[str, typer.Option("--identifier", "--node-identifier", help="name")],
    endpoint: Annotated[str | None, typer.Option(help="https:// URL (webhook)")] = None,
    capacity_per_hour: Annotated[int | None, typer.Option(help="units per hour")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a node."""
    from goodfellaz17.services.nodes import register_node

    data = _run(
        settings_or_exit(),
        lambda repo: register_node(
            repo,
            provider=provider,
            node_identifier=identifier,
            endpoint=endpoint,
            capacity_per_hour=capacity_per_hour,
            actor=cli_actor(),
        ),
    )
    if as_json:
        emit_json(data)
    else:
        out.print(_rows(NODE_COLUMNS, [data]))


@nodes_app.command("list")
def nodes_list(as_json: JsonOption = False) -> None:
    """Every node with its health."""
    from goodfellaz17.services.nodes import list_nodes

    data = _run(settings_or_exit(), list_nodes)
    if as_json:
        emit_json(data)
    else:
        out.print(_rows(NODE_COLUMNS, data))


def _set_enabled(node_id: int, enabled: bool, as_json: bool) -> None:
    from goodfellaz17.services.nodes import set_node_enabled

    data = _run(
        settings_or_exit(),
        lambda repo: set_node_enabled(repo, node_id, enabled=enabled, actor=cli_actor()),
    )
    if as_json:
        emit_json(data)
    else:
        out.print(_rows(NODE_COLUMNS, [data]))


@nodes_app.command("disable")
def nodes_disable(node_id: int, as_json: JsonOption = False) -> None:
    """Stop sending tasks to a node (it is kept for history)."""
    _set_enabled(node_id, False, as_json)


@nodes_app.command("enable")
def nodes_enable(node_id: int, as_json: JsonOption = False) -> None:
    """Send tasks to a node again (its circuit is closed)."""
    _set_enabled(node_id, True, as_json)


# ---------------------------------------------------------------- chaos


def _show_chaos(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(data)
    else:
        out.print(_pairs(data, title="chaos"))


@chaos_app.command("status")
def chaos_status(as_json: JsonOption = False) -> None:
    """Whether chaos injection is on, what it does, and when it expires."""
    from goodfellaz17.services import chaos

    _show_chaos(_run(settings_or_exit(), chaos.chaos_status), as_json)


@chaos_app.command("enable")
def chaos_enable(
    pause: Annotated[bool, typer.Option("--pause", help="stop every worker claiming")] = False,
    failure_rate: Annotated[float, typer.Option(help="injected failure probability")] = 0.0,
    latency_ms: Annotated[int, typer.Option(help="added latency per task")] = 0,
    ttl: Annotated[float | None, typer.Option(help="seconds until it expires")] = None,
    as_json: JsonOption = False,
) -> None:
    """Switch chaos injection on for every worker (it always expires)."""
    from goodfellaz17.services import chaos

    settings = settings_or_exit()
    data = _run(
        settings,
        lambda repo: chaos.enable_chaos(
            repo,
            settings,
            actor=cli_actor(),
            worker_paused=pause,
            failure_rate=failure_rate,
            latency_ms=latency_ms,
            ttl_seconds=ttl,
        ),
    )
    _show_chaos(data, as_json)


@chaos_app.command("disable")
def chaos_disable(as_json: JsonOption = False) -> None:
    """Switch chaos injection off; workers resume at once."""
    from goodfellaz17.services import chaos

    actor = cli_actor()
    _show_chaos(
        _run(settings_or_exit(), lambda repo: chaos.disable_chaos(repo, actor=actor)), as_json
    )
