"""`goodfellaz17 status` and `goodfellaz17 capacity`: the fleet at a glance
(workers and their liveness; healthy capacity against the backlog). Mounted
at the top level. Read only.
"""

from __future__ import annotations

from typing import Annotated

import typer

from goodfellaz17.cli.output import JsonOption, api_json, print_result
from goodfellaz17.cli.runtime import run_with_repo, settings_or_exit

app = typer.Typer()

BACKEND_COLUMNS = (
    "backend healthyNodes totalNodes healthyUnitsPerHour backlogUnits backlogEtaSeconds"
)


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Worker status: the fleet's totals and every recent worker."""
    from goodfellaz17.api.schemas import WorkerStatusResponse
    from goodfellaz17.services.workers import worker_status

    settings = settings_or_exit()
    result = run_with_repo(settings, lambda repo: worker_status(repo, settings))
    data = api_json(WorkerStatusResponse, result)
    columns = ["id", "state", "lastHeartbeatAt", "totalProcessed", "totalCompleted", "totalFailed"]
    print_result(data, as_json, title="workers", columns=columns, items=data["workers"])


@app.command()
def capacity(
    quantity: Annotated[int, typer.Option(help="size of the hypothetical new order")] = 15_000,
    backend: Annotated[str, typer.Option(help="its backend")] = "simulated",
    as_json: JsonOption = False,
) -> None:
    """Healthy capacity against the backlog, and whether a new order fits in 2 h."""
    from goodfellaz17.api.schemas import CapacityResponse
    from goodfellaz17.services.capacity import capacity as capacity_of

    settings = settings_or_exit()
    result = run_with_repo(
        settings, lambda repo: capacity_of(repo, settings, quantity=quantity, backend=backend)
    )
    data = api_json(CapacityResponse, result)
    print_result(
        data, as_json, title="capacity", columns=BACKEND_COLUMNS.split(), items=data["backends"]
    )
