"""Helpers for the metrics, health and logging tests."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
import yaml
from prometheus_client.parser import text_string_to_metric_families

from goodfellaz17.logs import configure_logging
from goodfellaz17.settings import Settings
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTMANAGER = PROMETHEUS / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "goodfellaz17.json"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def sample(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in metrics, f"{name}{labels or ''} is not exported"
    return metrics[key]


def exported_names(text: str) -> set[str]:
    """Sample names as Prometheus stores them (with _total, _bucket, _sum, ...)."""
    return {name for name, _ in parse_metrics(text)}


async def scraped_names(api: Any, repo: Any) -> set[str]:
    """The sample names of a live scrape of the app's /metrics (`api`, the
    conftest client), the invariant monitor run once so its gauges exist too."""
    from goodfellaz17.services.invariant_monitor import InvariantMonitor
    from tests.conftest import READ_KEY, key_headers

    await InvariantMonitor(repo, 60).run_once()
    response = await api.get("/metrics", headers=key_headers(READ_KEY))
    assert response.status_code == 200
    return exported_names(response.text)


def closed_port_url() -> str:
    """A PostgreSQL URL on a loopback port where nothing listens."""
    return f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"


@contextmanager
def captured_logs(settings: Settings) -> Iterator[io.StringIO]:
    """Configure logging as the service does, into a buffer; restore afterwards.

    Loggers are not cached here, so every logger (including module-level ones
    used by earlier tests) renders through this configuration."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(settings, stream=buffer)
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (enough PromQL for our rules
    and dashboards: no label matcher, range, string or grouping survives)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        token = match.group(0)
        if token.lower() in _PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names
