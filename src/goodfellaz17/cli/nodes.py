"""`goodfellaz17 nodes ...`: register, list, disable and enable delivery
nodes (the capacity), each change a recorded operator action. Nodes are
never deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from goodfellaz17.cli.output import JsonOption, api_json, out, print_json, rows_table
from goodfellaz17.cli.runtime import cli_actor, run_with_repo, settings_or_exit

if TYPE_CHECKING:
    from goodfellaz17.services.nodes import Node

app = typer.Typer(help="Delivery nodes (capacity).", no_args_is_help=True)

NODE_COLUMNS = ["id", "provider", "nodeIdentifier", "capacityPerHour", "state", "healthy"]


def _show_nodes(found: list[Node], as_json: bool, *, one: bool) -> None:
    """One node (add, disable, enable) or the list, as the API shows them."""
    from goodfellaz17.api.schemas import NodeResponse

    data = [api_json(NodeResponse, n) for n in found]
    if as_json:
        print_json(data[0] if one else data)
    else:
        out.print(rows_table(NODE_COLUMNS, data))


@app.command("add")
def nodes_add(
    provider: Annotated[str, typer.Option(help="the backend: simulated or webhook")],
    identifier: Annotated[str, typer.Option("--identifier", "--node-identifier", help="name")],
    endpoint: Annotated[str | None, typer.Option(help="https:// URL (webhook)")] = None,
    capacity_per_hour: Annotated[int | None, typer.Option(help="units per hour")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a node."""
    from goodfellaz17.services.nodes import register_node

    settings = settings_or_exit()
    node = run_with_repo(
        settings,
        lambda repo: register_node(
            repo,
            provider=provider,
            node_identifier=identifier,
            endpoint=endpoint,
            capacity_per_hour=capacity_per_hour,
            destinations=settings.webhook_destinations,
            actor=cli_actor(),
        ),
    )
    _show_nodes([node], as_json, one=True)


@app.command("list")
def nodes_list(as_json: JsonOption = False) -> None:
    """Every node with its health."""
    from goodfellaz17.services.nodes import list_nodes

    _show_nodes(run_with_repo(settings_or_exit(), list_nodes), as_json, one=False)


def _set_enabled(node_id: int, enabled: bool, as_json: bool) -> None:
    from goodfellaz17.services.nodes import set_node_enabled

    node = run_with_repo(
        settings_or_exit(),
        lambda repo: set_node_enabled(repo, node_id, enabled=enabled, actor=cli_actor()),
    )
    _show_nodes([node], as_json, one=True)


@app.command("disable")
def nodes_disable(node_id: int, as_json: JsonOption = False) -> None:
    """Stop sending tasks to a node (it is kept for history)."""
    _set_enabled(node_id, False, as_json)


@app.command("enable")
def nodes_enable(node_id: int, as_json: JsonOption = False) -> None:
    """Send tasks to a node again (its circuit is closed)."""
    _set_enabled(node_id, True, as_json)
