"""Settings for running behind a transaction-mode pooler (PgBouncer)."""

from __future__ import annotations

import pytest

from goodfellaz17.db.pool import DatabaseLocation, connection_kwargs
from goodfellaz17.settings import ConfigError, load_settings
from goodfellaz17.worker.worker import OrderDeliveryWorker

POOLED = "postgresql://app@pgbouncer:6432/goodfellaz17"
DIRECT = "postgresql://app@postgres:5432/goodfellaz17"


@pytest.mark.parametrize("value", ["", "  ", "none", "None", "off"])
def test_an_empty_prepare_threshold_turns_prepared_statements_off(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GOODFELLAZ17_DB_PREPARE_THRESHOLD", value)
    settings = load_settings()
    assert settings.db_prepare_threshold is None
    assert connection_kwargs(settings, "x")["prepare_threshold"] is None


def test_prepared_statements_are_on_by_default() -> None:
    assert connection_kwargs(load_settings(), "x")["prepare_threshold"] == 5


def test_a_bad_prepare_threshold_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFELLAZ17_DB_PREPARE_THRESHOLD", "sometimes")
    with pytest.raises(ConfigError, match=r"^GOODFELLAZ17_DB_PREPARE_THRESHOLD:"):
        load_settings()


def test_a_zero_statement_timeout_sends_no_options_parameter() -> None:
    # PgBouncer refuses the `options` start-up parameter outright.
    assert "options" not in connection_kwargs(load_settings(db_statement_timeout_ms=0), "x")
    kwargs = connection_kwargs(load_settings(db_statement_timeout_ms=1500), "x")
    assert kwargs["options"] == "-c statement_timeout=1500"


def test_listen_and_migrations_use_the_direct_url_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", POOLED)
    monkeypatch.setenv("GOODFELLAZ17_DIRECT_DATABASE_URL", DIRECT)
    settings = load_settings()
    location = DatabaseLocation(settings)
    assert (location.url(), location.direct_url()) == (POOLED, DIRECT)
    worker = OrderDeliveryWorker(settings, location.url(), backends={})
    assert (worker.database_url, worker.listen_url) == (POOLED, DIRECT)


def test_without_a_direct_url_everything_uses_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", DIRECT)
    monkeypatch.setenv("GOODFELLAZ17_DIRECT_DATABASE_URL", " ")
    settings = load_settings()
    assert settings.direct_database_url is None
    assert DatabaseLocation(settings).direct_url() == DIRECT
    assert OrderDeliveryWorker(settings, DIRECT, backends={}).listen_url == DIRECT


def test_a_direct_url_without_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFELLAZ17_DIRECT_DATABASE_URL", DIRECT)
    with pytest.raises(ConfigError, match=r"^GOODFELLAZ17_DIRECT_DATABASE_URL needs DATABASE_URL"):
        load_settings()


def test_a_direct_url_must_be_postgresql_and_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", POOLED)
    monkeypatch.setenv("GOODFELLAZ17_DIRECT_DATABASE_URL", "mysql://root:hunter2@db/x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("GOODFELLAZ17_DIRECT_DATABASE_URL:")
    assert "hunter2" not in str(info.value)
