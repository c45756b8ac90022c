#!/usr/bin/env python3
"""Build deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml.

alerts.yml is the one source of the alert rules (promtool checks and tests
it); the Prometheus Operator wants the same groups wrapped in a PrometheusRule
custom resource. This script does the wrapping and nothing else, so the two
can never drift:

    python deploy/k8s/build_prometheusrule.py            # rewrite the file
    python deploy/k8s/build_prometheusrule.py --check    # exit 1 if stale

tests/unit/test_k8s_manifests.py runs the check in `make test`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
OUTPUT = DEPLOY / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/k8s/build_prometheusrule.py:
# do not edit; change alerts.yml and run `make k8s-rules`.
#
# If your Prometheus selects rules by label (kube-prometheus-stack:
# `release: <name>`), add that label in an overlay.
"""

LABELS = {"app.kubernetes.io/name": "goodfellaz17", "app.kubernetes.io/part-of": "goodfellaz17"}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL expressions stay readable)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def load_groups(alerts: Path) -> list[dict[str, Any]]:
    """The rule groups of a Prometheus rule file, checked for the basic shape."""
    data = yaml.safe_load(alerts.read_text())
    if not isinstance(data, dict) or set(data) != {"groups"}:
        raise ValueError(f"{alerts}: a rule file has exactly one top-level key, `groups`")
    groups = data["groups"]
    if not isinstance(groups, list) or not groups:
        raise ValueError(f"{alerts}: `groups` must be a non-empty list")
    for group in groups:
        if not isinstance(group, dict) or not group.get("name") or not group.get("rules"):
            raise ValueError(f"{alerts}: every group needs a `name` and `rules`")
    return groups


def build(alerts: Path = ALERTS) -> str:
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "goodfellaz17", "labels": LABELS},
        "spec": {"groups": load_groups(alerts)},
    }
    body = yaml.dump(resource, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--alerts", type=Path, default=ALERTS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    wanted = build(args.alerts)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != wanted:
            print(
                f"{args.output} is stale: run `python deploy/k8s/build_prometheusrule.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
