"""`goodfellaz17 archive` and `goodfellaz17 storage status | maintain`: the
day partitions that hold finished orders and their tasks, their retention
(GOODFELLAZ17_RETENTION_DAYS), and the export before a day is dropped.

`archive --to FILE` writes every day that retention may drop and that is not
archived yet (JSON lines: one order a line with its tasks; CSV: one task a
row, its order's columns first), marks those days archived, and with
`--drop` drops them at once (otherwise the maintenance leader does, at its
next run; with GOODFELLAZ17_RETENTION_REQUIRE_ARCHIVE=true it drops nothing
that was not archived).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from goodfellaz17.cli.output import JsonOption, fail, print_result
from goodfellaz17.cli.runtime import run_with_repo, settings_or_exit

app = typer.Typer()
storage_app = typer.Typer(help="Day partitions and their retention.", no_args_is_help=True)

FormatOption = Annotated[
    str, typer.Option("--format", help="jsonl (one order a line) or csv (one task a row)")
]


@app.command()
def archive(
    to: Annotated[str, typer.Option("--to", help="the file to write (created or replaced)")],
    fmt: FormatOption = "jsonl",
    drop: Annotated[bool, typer.Option("--drop", help="drop the days once written")] = False,
    as_json: JsonOption = False,
) -> None:
    """Export the finished days retention may drop, then (with --drop) drop them."""
    from goodfellaz17.services.storage import ARCHIVE_FORMATS
    from goodfellaz17.services.storage import archive as archive_days

    if fmt not in ARCHIVE_FORMATS:
        fail(f"--format must be one of: {', '.join(ARCHIVE_FORMATS)}")
    target = Path(to)
    if target.is_dir():
        fail(f"--to {to}: is a folder; give a file name")
    settings = settings_or_exit()
    try:
        handle = target.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        fail(f"--to {to}: {exc.strerror or exc}")
    with handle:
        result = run_with_repo(
            settings, lambda repo: archive_days(repo, settings, handle, fmt=fmt, drop=drop)
        )
    data: dict[str, Any] = {
        "file": str(target),
        "format": fmt,
        "days": [d.isoformat() for d in result.days],
        "orders": result.orders,
        "tasks": result.tasks,
        "dropped": [d.isoformat() for d in result.dropped],
    }
    print_result(data, as_json, title="archive")


@storage_app.command("status")
def storage_status(as_json: JsonOption = False) -> None:
    """Every day whose partitions exist, with its size and what keeps it."""
    from goodfellaz17.services.storage import StorageMaintenance

    settings = settings_or_exit()
    days = run_with_repo(settings, lambda repo: StorageMaintenance(repo, settings).list_days())
    rows = [
        {
            "day": d.day.isoformat(),
            "bytes": d.bytes,
            "archivedAt": d.archived_at,
            "keptBecause": d.blocker or "(may be dropped)",
        }
        for d in days
    ]
    data = {"retentionDays": settings.retention_days, "days": rows}
    print_result(
        data,
        as_json,
        title="storage",
        columns=["day", "bytes", "archivedAt", "keptBecause"],
        items=rows,
    )


@storage_app.command("maintain")
def storage_maintain(as_json: JsonOption = False) -> None:
    """Run the storage maintenance once now (what the leader does periodically)."""
    from goodfellaz17.services.storage import StorageMaintenance

    settings = settings_or_exit()
    result = run_with_repo(settings, lambda repo: StorageMaintenance(repo, settings).run_once())
    data = dataclasses.asdict(result)
    data["days_dropped"] = [d.isoformat() for d in result.days_dropped]
    data["days_kept"] = {d.isoformat(): why for d, why in result.days_kept.items()}
    print_result(data, as_json, title="storage maintenance")
