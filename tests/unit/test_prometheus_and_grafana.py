"""deploy/: alert rules (promtool), Alertmanager routing (amtool), dashboard.

`make test` runs `make promtool-test` first and tells pytest so, so the
promtool run here is skipped there rather than repeated; run on its own,
pytest runs promtool itself (installing it when it can).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable

import pytest

from tests.observability import (
    ALERT_TESTS,
    ALERTMANAGER,
    ALERTS,
    DASHBOARD,
    ROOT,
    alert_rules,
    dashboard_expressions,
    load_yaml,
)

# The contract's thresholds (CONTRACT.md section 5) and how we page on them.
CONTRACT_ALERTS = {
    "DeadLetterQueueHigh": ("max(delivery_dead_letter_queue) > 50", "P2", "true"),
    "DeadLetterQueueCritical": ("max(delivery_dead_letter_queue) > 500", "P1", "true"),
    "TasksExecutingTooLong": ("max(delivery_tasks_executing_over_5m) > 10", "P2", "true"),
    "OrphanRecoveryElevated": (
        "sum(increase(delivery_orphans_recovered_total[1h])) > 20",
        "P3",
        "false",
    ),
    "OrphanRecoveryHigh": (
        "sum(increase(delivery_orphans_recovered_total[1h])) > 50",
        "P2",
        "true",
    ),
    "OrderProcessingOver2h": ("max(delivery_orders_processing_over_2h) > 0", "P3", "false"),
    "OrderProcessingOver4h": ("max(delivery_orders_processing_over_4h) > 0", "P2", "true"),
    "InvariantViolation": ("max(delivery_invariant_violations) > 0", "P1", "true"),
}
CONTRACT_EXPRESSIONS = [
    'rate(delivery_plays_total{outcome="delivered"}[5m]) * 60',
    "delta(delivery_dead_letter_queue[1h])",
]
REQUIRED_PANELS = {
    "Delivery rate (units/min)",
    "Failure rate (per min)",
    "Dead-letter growth (1 h)",
    "Tasks by state",
    "Task latency (backend call)",
    "Batch latency (recording outcomes)",
    "Orphans recovered",
    "Workers active",
}


@pytest.fixture(scope="session")
def prometheus_tool() -> Callable[[str], str]:
    """The path of promtool or amtool, installed once (Debian packages) if
    missing and possible; the test is skipped only when it cannot be had."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(
                ["make", "-C", str(ROOT), "debian-deps"],
                check=False,
                capture_output=True,
                timeout=900,
            )
            path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} is not installed and could not be installed here")
        return path

    return find


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules_and_passes_their_unit_tests(
    prometheus_tool: Callable[[str], str],
) -> None:
    if os.environ.get("PROMTOOL_RULES_CHECKED") == "1":
        pytest.skip("`make promtool-test` ran promtool on these files in this run")
    promtool = prometheus_tool("promtool")
    checked = run(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    configured = run(promtool, "check", "config", str(ALERTS.parent / "prometheus.yml"))
    assert configured.returncode == 0, configured.stdout + configured.stderr
    tested = run(promtool, "test", "rules", *map(str, ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(ALERT_TESTS)


def test_alertmanager_pages_only_page_true_and_sends_the_rest_to_slack(
    prometheus_tool: Callable[[str], str],
) -> None:
    amtool = prometheus_tool("amtool")
    checked = run(amtool, "check-config", str(ALERTMANAGER))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for labels, receiver in (
        (["page=true", "severity=P1", "alertname=InvariantViolation"], "pager"),
        (["page=true", "severity=P2", "alertname=DeadLetterQueueHigh"], "pager"),
        (["page=false", "severity=P3", "alertname=OrderProcessingOver2h"], "slack-alerts"),
        (["alertname=SomethingUnlabelled"], "slack-alerts"),
    ):
        routed = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
        assert routed.returncode == 0, routed.stderr
        assert routed.stdout.split() == [receiver], labels


def test_every_contract_threshold_has_its_alert_with_its_paging_policy() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, (expr, severity, page) in CONTRACT_ALERTS.items():
        assert name in rules, f"no alert for the contract's {name}"
        assert rules[name]["expr"] == expr
        assert rules[name]["labels"]["severity"] == severity
        assert rules[name]["labels"]["page"] == page


def test_every_alert_has_labels_summary_and_a_runbook_anchor() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        labels, annotations = rule["labels"], rule["annotations"]
        assert labels["page"] in ("true", "false"), name
        assert labels["severity"] in ("P1", "P2", "P3"), name
        # P1 and P2 page, P3 does not: one policy, no exceptions.
        assert (labels["page"] == "true") == (labels["severity"] in ("P1", "P2")), name
        assert labels["service"] == "goodfellaz17", name
        assert annotations["summary"].strip(), name
        assert annotations["runbook_url"] == f"docs/RUNBOOK.md#alert-{name.lower()}"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    fired: set[str] = set()
    held: set[str] = set()
    for path in ALERT_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else held).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"never shown firing: {names - fired}"
    assert names <= held, f"never shown holding at its threshold: {names - held}"


def test_the_dashboard_loads_with_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert titles >= REQUIRED_PANELS
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    expressions = dashboard_expressions()
    for contract_expression in CONTRACT_EXPRESSIONS:
        assert contract_expression in expressions
    assert any("histogram_quantile" in e and "task_duration" in e for e in expressions)
    assert any("histogram_quantile" in e and "batch_duration" in e for e in expressions)


def test_every_dashboard_expression_is_evaluated_by_a_promtool_test() -> None:
    tested: set[str] = set()
    for path in ALERT_TESTS:
        for case in load_yaml(path)["tests"]:
            tested |= {check["expr"] for check in case.get("promql_expr_test", [])}
    missing = [e for e in dashboard_expressions() if e not in tested]
    assert not missing, f"not evaluated by promtool: {missing}"


def test_promtool_inputs_use_only_the_labels_the_service_sets() -> None:
    """Test series carry job/instance (added by Prometheus) and the labels we
    export: status, outcome, le. A typo in a label would make a test prove
    nothing about the real series."""
    allowed = {"job", "instance", "status", "outcome", "le"}
    for path in ALERT_TESTS:
        for case in load_yaml(path)["tests"]:
            for series in case.get("input_series", []):
                labels = set(re.findall(r"(\w+)=", series["series"]))
                assert labels <= allowed, series["series"]
