from __future__ import annotations

import pytest

from goodfellaz17.settings import ConfigError, Role, load_settings, parse_api_keys


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.worker_enabled is True
    assert s.worker_batch_size == 10
    assert s.worker_poll_interval_seconds == 10
    assert s.max_attempts == 5
    assert s.max_orphanings == 20
    assert s.max_orphanings > s.max_attempts, "a crash is cheaper than a delivery failure"
    assert s.task_lease_seconds == 300
    assert s.task_size == 400
    assert s.port == 8080
    assert s.chaos_allowed is True
    assert s.database_url is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GOODFELLAZ17_WORKER_BATCH_SIZE", "0"),
        ("GOODFELLAZ17_WORKER_BATCH_SIZE", "ten"),
        ("GOODFELLAZ17_WORKER_ENABLED", "maybe"),
        ("GOODFELLAZ17_MAX_ATTEMPTS", "-3"),
        ("GOODFELLAZ17_MAX_ORPHANINGS", "0"),
        ("GOODFELLAZ17_TASK_LEASE_SECONDS", "0"),
        ("GOODFELLAZ17_TASK_SIZE", "1.5"),
        ("GOODFELLAZ17_PORT", "70000"),
        ("GOODFELLAZ17_API_KEYS", "abc:admin"),
        ("GOODFELLAZ17_API_KEYS", "justakey"),
        ("GOODFELLAZ17_CHAOS_ALLOWED", "perhaps"),
        ("DATABASE_URL", "mysql://x"),
    ],
)
def test_a_bad_value_names_its_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(variable + ":")
    assert "\n" not in message


def test_a_bad_api_key_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFELLAZ17_API_KEYS", "supersecretvalue:admin")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "supersecretvalue" not in str(info.value)


def test_api_keys_parse_with_roles_and_hide_their_secret() -> None:
    keys = parse_api_keys("k1:read, k2:orders,k3:operator,")
    assert [k.role for k in keys] == [Role.READ, Role.ORDERS, Role.OPERATOR]
    assert "k1" not in repr(keys[0])


def test_production_refuses_short_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFELLAZ17_ENV", "production")
    monkeypatch.setenv("GOODFELLAZ17_API_KEYS", "short:operator")
    with pytest.raises(ConfigError, match="GOODFELLAZ17_API_KEYS"):
        load_settings()


def test_backoff_bounds_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFELLAZ17_BACKOFF_BASE_SECONDS", "10")
    monkeypatch.setenv("GOODFELLAZ17_BACKOFF_MAX_SECONDS", "1")
    with pytest.raises(ConfigError, match="GOODFELLAZ17_BACKOFF_MAX_SECONDS"):
        load_settings()
