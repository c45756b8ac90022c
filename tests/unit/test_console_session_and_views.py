"""CSRF tokens compare exactly, and the pure presentation helpers behind the
console's pages. (Sessions live in the database: test_console_sessions.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from goodfellaz17.api.auth import Principal
from goodfellaz17.api.console import views
from goodfellaz17.api.console.session import ConsoleSession, csrf_matches
from goodfellaz17.services.console import MinuteUnits
from goodfellaz17.settings import Role


def test_csrf_tokens_compare_exactly() -> None:
    session = ConsoleSession(
        principal=Principal(role=Role.OPERATOR, fingerprint="0123abcd" * 4),
        csrf_token="a-csrf-token-0123456789",
        id_hash="0" * 64,
    )
    assert csrf_matches(session, session.csrf_token)
    for wrong in (None, "", session.csrf_token[:-1], session.csrf_token + "x", "é"):
        assert not csrf_matches(session, wrong)


# ---------------------------------------------------------------- views


@pytest.mark.parametrize(
    ("delivered", "dead", "quantity", "expected"),
    [
        (0, 0, 15_000, {"done": 0, "dead": 0, "rest": 1000}),
        (7_500, 0, 15_000, {"done": 500, "dead": 0, "rest": 500}),
        (1, 1, 15_000, {"done": 1, "dead": 1, "rest": 998}),  # tiny shares stay visible
        (400, 400, 1200, {"done": 333, "dead": 333, "rest": 334}),
        (14_600, 400, 15_000, {"done": 973, "dead": 27, "rest": 0}),
        (10, 0, 0, {"done": 0, "dead": 0, "rest": 1000}),
    ],
)
def test_bar_segments_always_fill_the_bar(
    delivered: int, dead: int, quantity: int, expected: dict[str, int]
) -> None:
    segments = views.bar_segments(delivered, dead, quantity)
    assert segments == expected
    assert sum(segments.values()) == views.BAR_WIDTH


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (1, 1), (2, 2), (3, 5), (10, 10), (11, 20), (101, 200), (4000, 5000), (999, 1000)],
)
def test_chart_scale_rounds_up_to_1_2_or_5(value: int, ceiling: int) -> None:
    assert views.nice_ceiling(value) == ceiling


def test_chart_scales_bars_to_the_rounded_peak() -> None:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    units = {10: 800, 59: 400}
    points = [MinuteUnits(start + timedelta(minutes=i), units.get(i, 0)) for i in range(60)]
    chart = views.chart(points)
    assert chart["top"] == 1000
    assert chart["total"] == 1200
    assert len(chart["bars"]) == 60
    assert chart["bars"][10]["height"] == 80.0
    assert chart["bars"][10]["y"] == 20.0
    assert chart["bars"][59]["height"] == 40.0
    assert chart["bars"][0]["height"] == 0.0
    assert chart["bars"][59]["x"] + chart["bars"][59]["width"] < views.BAR_WIDTH
    assert views.chart([])["bars"] == []


def test_ages_and_durations_read_like_an_operator_would_say_them() -> None:
    assert views.duration(None) == views.NONE
    assert views.duration(0.4) == "<1 s"
    assert views.duration(45) == "45 s"
    assert views.duration(200) == "3 min 20 s"
    assert views.duration(2 * 3600 + 300) == "2 h 05 min"
    assert views.duration(3 * 86400 + 4 * 3600) == "3 d 4 h"
    assert views.age(59) == "<1 min"
    assert views.age(200) == "3 min"
    assert views.age(2 * 3600 + 59) == "2 h 00 min"
    assert views.in_minutes(30) == "in under a minute"
    assert views.in_minutes(61) == "in 2 min"
    assert views.percent(1, 15_000) == "<1%"
    assert views.percent(14_999, 15_000) == ">99%"
    assert views.percent(7_500, 15_000) == "50%"
    assert views.number(15_000) == "15,000"
