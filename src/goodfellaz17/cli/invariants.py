"""`goodfellaz17 invariants check`: one order, every order, or orphaned
tasks; each check is logged to invariant_check_log like the API's.

Exit code 1 when a check finds violations (scripts page on it), 2 on bad
input. Never changes an order or a task.
"""

from __future__ import annotations

from typing import Annotated

import typer

from goodfellaz17.cli.output import (
    JsonOption,
    api_json,
    fail,
    out,
    pairs_table,
    print_json,
    rows_table,
)
from goodfellaz17.cli.runtime import parse_uuid, run_with_repo, settings_or_exit

app = typer.Typer(help="Check the accounting invariants.", no_args_is_help=True)


@app.command("check")
def invariants_check(
    order_id: Annotated[str | None, typer.Argument(help="check this order only")] = None,
    check_all: Annotated[bool, typer.Option("--all", help="every order (default)")] = False,
    orphans: Annotated[bool, typer.Option("--orphans", help="tasks past their lease")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check one order, every order, or orphaned tasks; exit 1 on violations."""
    from goodfellaz17.api import schemas
    from goodfellaz17.services import invariants

    cli = invariants.CheckSource.CLI
    if sum((order_id is not None, check_all, orphans)) > 1:
        fail("give one of ORDER_ID, --all or --orphans")
    settings = settings_or_exit()
    if order_id is not None:
        oid = parse_uuid(order_id, "ORDER_ID")
        checked = run_with_repo(
            settings, lambda repo: invariants.check_order(repo, oid, source=cli)
        )
        data = api_json(schemas.OrderInvariantsResponse, checked)
        rows, columns = data["checks"], ["name", "expected", "actual", "passed"]
    elif orphans:
        found = run_with_repo(settings, lambda repo: invariants.check_orphans(repo, source=cli))
        data = api_json(schemas.OrphansResponse, found)
        rows = data["orphans"]
        columns = ["taskId", "orderId", "leaseOwner", "leaseExpiresAt", "overdueSeconds"]
    else:
        # An operator's check feeds the alerts (the runbook's InvariantCheckStale fix).
        overall = run_with_repo(settings, lambda repo: invariants.check_all(repo, source=cli))
        data = api_json(schemas.GlobalInvariantsResponse, overall)
        rows, columns = data["violations"], ["orderId", "check", "expected", "actual"]
    if as_json:
        print_json(data)
    else:
        out.print(pairs_table(data, title="invariants"))
        if rows:
            out.print(rows_table(columns, rows))
    if not data["passed"]:
        raise typer.Exit(code=1)
