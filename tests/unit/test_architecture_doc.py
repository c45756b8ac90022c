"""The docs cannot drift from the code they describe: docs/ARCHITECTURE.md's
transition table is the domain's; every setting, command, make target, route,
file, module attribute, test and Kubernetes resource that README.md or
docs/*.md names in backticks exists; the README's defaults are the code's;
links between the docs lead to a file and, with `#anchor`, to one of its
headings. What counts as a name is in tests/doc_names.py; the names that live
in the database or the metrics are checked by
tests/integration/test_docs_name_real_things.py.

A failure lists every offending `doc:line: name`. Fix the doc (or the code),
never the list of what counts."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from goodfellaz17.domain.states import TRANSITIONS, TaskStatus
from tests import doc_names
from tests.deploy_manifests import ROOT
from tests.doc_names import Mention, Name

DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def problems_with(kind: str, problem: Callable[[str], str | None]) -> list[str]:
    named = [n for n in doc_names.names() if n.kind == kind]
    assert named, f"the docs name no {kind} at all: is the extraction broken?"
    return [f"{n}: {why}" for n in named if (why := problem(n.value))]


def report(problems: list[str], what: str = "names in the docs that do not exist") -> str:
    return f"{what}:\n" + "\n".join(problems)


def test_the_transition_table_is_the_domain_transition_table() -> None:
    rows = re.findall(r"^\| ([A-Z_]+) → ([A-Z_]+) \|", DOC, flags=re.MULTILINE)
    documented = [(TaskStatus(a), TaskStatus(b)) for a, b in rows]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(TRANSITIONS)


def test_every_variable_named_is_a_real_setting() -> None:
    assert re.search(r"GOODFELLAZ17_[A-Z]", DOC), "the architecture names its settings"
    variables = doc_names.setting_variables()
    defined = doc_names.names_the_docs_define()  # `export GOODFELLAZ17_API_KEY=...`
    problems = problems_with(
        "setting", lambda v: None if v in variables | defined else "no such setting"
    )
    problems += problems_with(
        "setting-suffix",
        lambda v: None if any(x.endswith(v) for x in variables) else "no setting ends so",
    )
    assert not problems, report(problems)


def test_every_default_in_the_readme_is_the_settings_default() -> None:
    rows = doc_names.documented_defaults()
    assert len(rows) > 20, "the README lists the settings with their defaults"
    problems = [
        f"{where}: {why}"
        for where, var, value in rows
        if (why := doc_names.default_problem(var, value))
    ]
    assert not problems, report(problems, "defaults in the README that are not the code's")


def test_every_command_and_make_target_named_exists() -> None:
    spelled = doc_names.names_spelled_in_package()

    def command_problem(usage: str) -> str | None:
        problem = doc_names.command_problem(usage)
        # `chaos enabled` reads like a command but is a log event.
        return None if problem and usage in spelled else problem

    problems = problems_with("command", command_problem)
    targets = doc_names.make_targets()
    problems += problems_with("make", lambda t: None if t in targets else "no such target")
    assert not problems, report(problems)


def test_every_route_named_is_served_by_the_app() -> None:
    problems = problems_with("route", doc_names.route_problem)
    assert not problems, report(problems)


def test_every_file_module_attribute_test_and_resource_named_exists() -> None:
    problems = problems_with("path", lambda p: None if doc_names.path_exists(p) else "no such file")
    problems += problems_with(
        "module", lambda a: None if doc_names.attribute_exists(a) else "no such attribute"
    )
    problems += problems_with(
        "test", lambda t: None if doc_names.pytest_node_exists(t) else "no such test"
    )
    problems += problems_with(
        "k8s", lambda r: None if doc_names.k8s_resource_exists(r) else "not in deploy/k8s"
    )
    assert not problems, report(problems)


def test_every_link_between_the_docs_leads_to_a_file_and_a_heading() -> None:
    found = doc_names.links()
    assert any("#" in link.text for link in found), "the docs link to sections"
    problems = [f"{link}: {why}" for link in found if (why := doc_names.link_problem(link))]
    assert not problems, report(problems)


# What the check reads out of a span: the rules of tests/doc_names.py, by example.
READINGS = [
    ("task_record_outcomes", [("name", "task_record_outcomes")]),
    ("lease_expires_at < now()", [("name", "lease_expires_at")]),
    (
        "status = 'EXECUTING' AND fencing_token = <the claim's token>",
        [("name", "fencing_token")],
    ),
    ("max(delivery_dead_letter_queue) > 50", [("name", "delivery_dead_letter_queue")]),
    ("orders.delivered", [("dotted", "orders.delivered")]),
    ("domain/states.TRANSITIONS", [("module", "domain.states.TRANSITIONS")]),
    ("db/queries.sql", [("path", "db/queries.sql")]),
    ("deploy/k8s/", [("path", "deploy/k8s/")]),
    ("GOODFELLAZ17_WORKER_ENABLED=false", [("setting", "GOODFELLAZ17_WORKER_ENABLED")]),
    ("_MAX_SECONDS", [("setting-suffix", "_MAX_SECONDS")]),
    ("goodfellaz17 orders list", [("command", "orders list")]),
    ("dlq drain ID", [("command", "dlq drain ID")]),
    ("make k8s-rules", [("make", "k8s-rules")]),
    ("GET /api/orders/{orderId}", [("route", "GET /api/orders/{orderId}")]),
    ("test_worker::test_a_long_task", [("test", "test_worker::test_a_long_task")]),
    ("svc/goodfellaz17", [("k8s", "svc/goodfellaz17")]),
    ("OrderDeliveryWorker", [("name", "OrderDeliveryWorker")]),
    ("leasesLost", [("name", "leasesLost")]),
    ("$ORDER_ID", [("name", "ORDER_ID")]),
    # Not names: plain words, values, URLs, other products' syntax.
    ("status", []),
    ("PENDING", []),
    ("300", []),
    ("http://127.0.0.1:8080", []),
    ("python:3.11-slim", []),
    ("X-Api-Key", []),
    ("invariant check failed", []),
]


@pytest.mark.parametrize(("span", "expected"), READINGS, ids=[r[0] for r in READINGS])
def test_a_span_names_what_the_rules_say(span: str, expected: list[tuple[str, str]]) -> None:
    found: list[Name] = doc_names.names_in(Mention("doc.md", 1, span))
    assert [(n.kind, n.value) for n in found] == expected
