"""Presentation helpers for the console's templates: number, time and age
formats, progress-bar shares and the delivery chart's geometry.

Pure functions of their arguments: no database, no request.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from goodfellaz17.services.console import MinuteUnits

NONE = "\u2013"  # an en dash stands for "no value"
BAR_WIDTH = 1000  # progress bars and the chart are drawn in viewBox units


def number(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def duration(seconds: float | None) -> str:
    """A short human duration: 45 s, 3 min 20 s, 2 h 05 min, 3 d 4 h."""
    if seconds is None:
        return NONE
    if 0 < seconds < 1:
        return "<1 s"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def age(seconds: float | None) -> str:
    """A coarse age that changes at most once a minute: <1 min, 12 min, 2 h 05 min."""
    if seconds is None:
        return NONE
    if seconds < 60:
        return "<1 min"
    if seconds < 3600:
        return f"{int(seconds) // 60} min"
    return duration(seconds)


def ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{duration(seconds)} ago"


def in_minutes(seconds: float | None) -> str:
    """Time left, to the minute (so a refreshed banner does not change every second)."""
    if seconds is None:
        return "no expiry"
    if seconds < 60:
        return "in under a minute"
    return f"in {math.ceil(seconds / 60):,} min"


def timestamp(value: datetime | None) -> str:
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: datetime | None) -> str:
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%H:%M UTC")


def percent(part: float, whole: float) -> str:
    if not whole:
        return "0%"
    share = 100.0 * part / whole
    if 0 < share < 1:
        return "<1%"
    if 99 < share < 100:
        return ">99%"
    return f"{share:.0f}%"


def bar_segments(delivered: int, dead: int, quantity: int) -> dict[str, int]:
    """Widths (of BAR_WIDTH) of the delivered, dead-lettered and remaining
    segments; a non-zero share is at least 1 unit wide so it stays visible."""
    if quantity <= 0:
        return {"done": 0, "dead": 0, "rest": BAR_WIDTH}

    def width(units: int) -> int:
        return 0 if units <= 0 else max(1, round(BAR_WIDTH * units / quantity))

    done = min(width(delivered), BAR_WIDTH)
    dead_w = min(width(dead), BAR_WIDTH - done)
    return {"done": done, "dead": dead_w, "rest": BAR_WIDTH - done - dead_w}


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 x 10^n at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    exponent: int = 10 ** (len(str(value - 1)) - 1)  # the power of ten at or below value - 1
    for step in (1, 2, 5, 10, 20):
        if step * exponent >= value:
            return step * exponent
    return 20 * exponent  # pragma: no cover - the loop always returns


CHART_HEIGHT = 100


def chart(points: list[MinuteUnits]) -> dict[str, Any]:
    """Bars for units per minute: x and width in BAR_WIDTH units across,
    height in CHART_HEIGHT units, scaled to a round maximum."""
    peak = max((p.units for p in points), default=0)
    top = nice_ceiling(peak)
    slot = BAR_WIDTH / max(len(points), 1)
    bars = []
    for i, p in enumerate(points):
        h = CHART_HEIGHT * p.units / top
        bars.append(
            {
                "x": round(i * slot + slot * 0.1, 2),
                "width": round(slot * 0.8, 2),
                "y": round(CHART_HEIGHT - h, 2),
                "height": round(h, 2),
                "minute": p.minute,
                "units": p.units,
            }
        )
    return {
        "bars": bars,
        "top": top,
        "peak": peak,
        "total": sum(p.units for p in points),
        "first": points[0].minute if points else None,
        "last": points[-1].minute if points else None,
        "width": BAR_WIDTH,
        "height": CHART_HEIGHT,
    }


def install_filters(env: Environment) -> None:
    env.filters.update(
        number=number,
        duration=duration,
        age=age,
        ago=ago,
        in_minutes=in_minutes,
        timestamp=timestamp,
        clock=clock,
    )
    env.globals.update(percent=percent, bar_segments=bar_segments, bar_width=BAR_WIDTH)
