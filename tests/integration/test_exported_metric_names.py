"""The dashboard, the alert rules and the promtool tests name only metrics
that the service really exports, as read from a live /metrics scrape."""

from __future__ import annotations

import re
from typing import Any

import pytest

from goodfellaz17.db.repository import Repository
from tests.observability import (
    ALERT_TESTS,
    alert_rules,
    dashboard_expressions,
    load_yaml,
    promql_metric_names,
    scraped_names,
)


@pytest.fixture
async def exported(api: Any, repo: Repository) -> set[str]:
    names = await scraped_names(api, repo)
    # The scrape is what Prometheus stores: suffixed counters and histograms.
    assert {
        "delivery_tasks_total",
        "delivery_plays_total",
        "delivery_task_duration_seconds_bucket",
        "delivery_task_duration_seconds_sum",
        "delivery_task_duration_seconds_count",
        "delivery_batch_duration_seconds_bucket",
        "delivery_tasks_pending",
        "delivery_invariant_last_check_timestamp_seconds",
    } <= names
    return names


async def test_every_dashboard_expression_names_only_exported_metrics(
    exported: set[str],
) -> None:
    for expr in dashboard_expressions():
        names = promql_metric_names(expr)
        assert names, expr
        assert names <= exported, f"{expr}: {names - exported} not exported"


async def test_every_alert_names_only_exported_metrics(exported: set[str]) -> None:
    for rule in alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: {names - exported} not exported"


async def test_promtool_tests_feed_series_named_as_exported(exported: set[str]) -> None:
    fed: set[str] = set()
    for path in ALERT_TESTS:
        for case in load_yaml(path)["tests"]:
            for series in case.get("input_series", []):
                match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", series["series"])
                assert match is not None, series
                fed.add(match.group(0))
    assert fed <= exported, f"not exported: {fed - exported}"


def test_the_name_extractor_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y"}[5m]))) '
        "/ ignoring(instance) max without (job) (b) > 1e3 and time() - c offset 5m"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b", "c"}
