"""The `goodfellaz17` command line (Typer + Rich): one module per command
group, mounted here.

    server.py      migrate, serve, worker, demo (top level)
    fleet.py       status, capacity (top level)
    orders.py      orders create | show | list | progress | failed-tasks |
                   retry-now | force-complete | cancel
    invariants.py  invariants check
    dlq.py         dlq drain
    nodes.py       nodes add | list | disable | enable
    chaos.py       chaos status | enable | disable
    storage.py     archive (top level), storage status | maintain
    output.py      the one JSON printer, tables, the one-line error
    runtime.py     settings, the database, who is acting
    demo.py        what `demo` runs

Exit codes: 0 done, 1 an invariant check found violations, 2 an error (one
readable line on stderr, never a traceback). Commands that read or change
data call the same service functions as the HTTP API, directly against the
database. Importing this package starts nothing and touches no database.
"""

from __future__ import annotations

import sys

import typer

from goodfellaz17.cli import chaos, dlq, fleet, invariants, nodes, orders, server, storage

app = typer.Typer(
    name="goodfellaz17",
    help="A durable order delivery engine on PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Top-level commands first, then the groups: the order `--help` lists them in.
app.add_typer(server.app)
app.add_typer(fleet.app)
app.add_typer(storage.app)
app.add_typer(orders.app, name="orders")
app.add_typer(invariants.app, name="invariants")
app.add_typer(dlq.app, name="dlq")
app.add_typer(nodes.app, name="nodes")
app.add_typer(chaos.app, name="chaos")
app.add_typer(storage.storage_app, name="storage")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
