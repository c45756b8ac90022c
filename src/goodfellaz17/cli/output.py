"""How the CLI prints: one JSON printer for `--json`, Rich tables for people,
and one readable line on stderr (exit code 2) for every error.

Commands print only through these, so `--json` output is the same shape for
every command and errors never print a traceback. Nothing here touches the
database.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import BaseModel

out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable JSON output")]


def fail(message: str) -> NoReturn:
    """Bad input or a refused action: one line on stderr, exit code 2."""
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    """The JSON for scripts, on stdout (the API's field names for what the API
    also serves)."""
    typer.echo(json.dumps(data, default=_json_default, indent=2))


def api_json(model: type[BaseModel], result: object) -> dict[str, Any]:
    """A service's typed result as the API returns it: the API's response
    model names the fields (camelCase), so `--json` and HTTP agree."""
    return model.model_validate(result).model_dump(by_alias=True)


def print_result(
    data: dict[str, Any],
    as_json: bool,
    *,
    title: str,
    columns: list[str] | None = None,
    items: list[dict[str, Any]] | None = None,
) -> None:
    """`--json`: the JSON; else a table of the scalar fields, then one of
    `items` (a row each) when the command lists some."""
    if as_json:
        print_json(data)
        return
    out.print(pairs_table(data, title=title))
    if columns is not None:
        out.print(rows_table(columns, items or []))


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


def pairs_table(
    data: dict[str, Any], keys: list[str] | None = None, title: str | None = None
) -> Table:
    """One name/value row per scalar field (lists and objects get tables of their own)."""
    table = Table(show_header=False, box=None, title=title, title_justify="left")
    for key in keys or [k for k, v in data.items() if not isinstance(v, list | dict)]:
        table.add_row(key, _fmt(data.get(key)))
    return table


def rows_table(columns: list[str], items: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(*columns, title=title, title_justify="left")
    for item in items:
        table.add_row(*(_fmt(item.get(c)) for c in columns))
    return table
