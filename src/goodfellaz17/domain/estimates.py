"""Progress and capacity arithmetic: percentages, rates and ETAs. Pure.

An ETA is None when nothing is moving (no rate, no capacity): "unknown" must
never read as "soon".
"""

from __future__ import annotations

SECONDS_PER_HOUR = 3600.0


def percent(part: int, whole: int) -> float:
    """`part` of `whole` in percent, two decimals; an empty whole is 0 %."""
    if whole <= 0:
        return 0.0
    return round(100.0 * part / whole, 2)


def recent_rate(recent_units: int, window_seconds: float, running_seconds: float | None) -> float:
    """Units per second over the recent window, or over the time since the
    work started when that is shorter than the window."""
    if running_seconds is None or running_seconds <= 0 or recent_units <= 0:
        return 0.0
    return recent_units / min(window_seconds, running_seconds)


def eta_seconds(units: int, units_per_second: float) -> float | None:
    """Seconds to move `units` at `units_per_second`: 0 when nothing is left,
    None when nothing moves."""
    if units <= 0:
        return 0.0
    if units_per_second <= 0:
        return None
    return round(units / units_per_second, 1)


def eta_at_capacity(units: int, units_per_hour: int) -> float | None:
    """Seconds to deliver `units` with `units_per_hour` of healthy capacity."""
    return eta_seconds(units, units_per_hour / SECONDS_PER_HOUR)


def fits_within(eta: float | None, limit_seconds: float) -> bool:
    return eta is not None and eta <= limit_seconds
