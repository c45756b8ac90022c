"""`goodfellaz17 dlq drain`: send an order's dead letters back to the queue
(the runbook's drain), one recorded operator action."""

from __future__ import annotations

import typer

from goodfellaz17.cli.orders import act_on_order
from goodfellaz17.cli.output import JsonOption

app = typer.Typer(help="The dead-letter queue.", no_args_is_help=True)


@app.command("drain")
def dlq_drain(order_id: str, as_json: JsonOption = False) -> None:
    """Send the order's dead letters back to the queue (attempts from 0, due now)."""
    from goodfellaz17.services import operations

    act_on_order(
        order_id,
        as_json,
        lambda repo, oid, actor: operations.drain_dead_letters(repo, oid, actor=actor),
    )
