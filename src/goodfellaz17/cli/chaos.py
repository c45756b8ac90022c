"""`goodfellaz17 chaos ...`: chaos injection for every worker on the
database (pause, failures, latency); it always expires, and
GOODFELLAZ17_CHAOS_ALLOWED=false refuses it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from goodfellaz17.cli.output import JsonOption, api_json, print_result
from goodfellaz17.cli.runtime import cli_actor, run_with_repo, settings_or_exit

if TYPE_CHECKING:
    from goodfellaz17.services.chaos import ChaosState

app = typer.Typer(help="Chaos injection for every worker.", no_args_is_help=True)


def _show_chaos(state: ChaosState, as_json: bool) -> None:
    from goodfellaz17.api.schemas import ChaosStatusResponse

    print_result(api_json(ChaosStatusResponse, state), as_json, title="chaos")


@app.command("status")
def chaos_status(as_json: JsonOption = False) -> None:
    """Whether chaos injection is on, what it does, and when it expires."""
    from goodfellaz17.services import chaos

    _show_chaos(run_with_repo(settings_or_exit(), chaos.chaos_status), as_json)


@app.command("enable")
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
    data = run_with_repo(
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


@app.command("disable")
def chaos_disable(as_json: JsonOption = False) -> None:
    """Switch chaos injection off; workers resume at once."""
    from goodfellaz17.services import chaos

    actor = cli_actor()
    _show_chaos(
        run_with_repo(settings_or_exit(), lambda repo: chaos.disable_chaos(repo, actor=actor)),
        as_json,
    )
