"""API fuzzing: schemathesis generates requests for every operation of the live
app's /openapi.json (valid and invalid data, with an operator key) against a
database that holds orders in every state. No request may get a 5xx, and every
response must match what the schema declares: status code, content type, body
and headers. Operations that take an order or node id get real ids most of the
time, so the fuzzing reaches past the 404s into real data.

Bounded: a fixed number of examples per operation and mode, derandomized, so
a run takes the same path (and about the same time) every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from goodfellaz17.api.app import create_app
from tests.conftest import OPERATOR_KEY, make_settings
from tests.helpers import insert_order, set_task_states, violations

EXAMPLES_PER_OPERATION = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
POSITIVE_CHECKS = [*CHECKS, ignored_auth]

STATES = [
    ["COMPLETED"] * 3 + ["FAILED_PERMANENT"] * 2 + ["FAILED_RETRYING"] * 2 + ["EXECUTING"] * 2,
    ["COMPLETED"] * 5,
    ["FAILED_PERMANENT"] * 3,
    [],
]


@pytest.fixture
def seeded_ids(sql: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    orders = []
    for states in STATES:
        order_id = insert_order(sql, 4_000)
        set_task_states(sql, order_id, states)
        orders.append(order_id)
    sql.execute(
        "INSERT INTO nodes (provider, node_identifier, endpoint)"
        " VALUES ('webhook', 'hook-1', 'https://hooks.example.test/deliver')"
    )
    nodes = [row[0] for row in sql.execute("SELECT id FROM nodes ORDER BY id").fetchall()]
    return {"orderId": orders, "nodeId": nodes}


@pytest.fixture
def schema(db_url: str, seeded_ids: dict[str, list[Any]]) -> Iterator[Any]:
    settings = make_settings(db_url, max_order_quantity=20_000, invariant_check_interval_seconds=0)
    app = create_app(settings, db_url, run_worker=False)
    # schemathesis runs the app's lifespan in its own event-loop thread.
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Undeclared query parameters are ignored, as HTTP APIs conventionally do;
    # the key is sent by the test (and taken away by the ignored_auth check).
    loaded.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    try:
        yield loaded
    finally:
        shutdown_lifespans()


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_covers_every_route_and_the_fuzzer_reaches_them(schema: Any) -> None:
    labels = {op.label for op in operations(schema)}
    assert "POST /api/orders" in labels
    assert "POST /api/admin/orders/{orderId}/force-complete" in labels
    assert "POST /api/admin/testing/enable" in labels
    assert "DELETE /api/internal/proxies/{nodeId}" in labels
    assert len(labels) >= 30


def fuzzer(operation: Any, mode: GenerationMode, real_ids: dict[str, Any], calls: list[Any]) -> Any:
    """A bounded, derandomized Hypothesis test of one operation in one mode."""
    checks = POSITIVE_CHECKS if mode == GenerationMode.POSITIVE else NEGATIVE_CHECKS
    strategies = {
        name: st.sampled_from([str(v) for v in values]) for name, values in real_ids.items()
    }

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def fuzz(case: Any, data: Any) -> None:
        # Valid data mostly names real rows; invalid data keeps its invalid ids.
        if mode == GenerationMode.POSITIVE:
            for name, strategy in strategies.items():
                if data.draw(st.integers(0, 3), label="real id") > 0:
                    case.path_parameters[name] = data.draw(strategy, label=name)
        calls.append(case)
        case.call_and_validate(headers={"X-Api-Key": OPERATOR_KEY}, checks=checks)

    return fuzz


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_get_no_5xx_and_conform_to_the_schema(
    schema: Any,
    seeded_ids: dict[str, list[Any]],
    sql: psycopg.Connection[Any],
    mode: GenerationMode,
) -> None:
    failures: dict[str, str] = {}
    calls: list[Any] = []
    for operation in operations(schema):
        real_ids = {k: v for k, v in seeded_ids.items() if k in operation.path_parameters}
        try:
            fuzzer(operation, mode, real_ids, calls)()
        except Unsatisfiable:
            # Nothing to make invalid: no parameters and no body.
            assert mode == GenerationMode.NEGATIVE, operation.label
            assert not operation.path_parameters, operation.label
            assert not operation.body, operation.label
        except (Exception, BaseExceptionGroup) as exc:
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]

    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert len(calls) >= EXAMPLES_PER_OPERATION * len(operations(schema)) // 2
    # Whatever was fuzzed, the accounting still holds; chaos is switched off
    # through the API, as an operator would after a test.
    assert violations(sql) == []
    headers = {"X-Api-Key": OPERATOR_KEY}
    disabled = schema["/api/admin/testing/disable"]["POST"].Case().call(headers=headers)
    assert disabled.status_code == 200
    status = schema["/api/admin/testing/status"]["GET"].Case().call(headers=headers)
    assert status.json()["active"] is False
    assert sql.execute("SELECT enabled FROM chaos_settings").fetchone() == (False,)
