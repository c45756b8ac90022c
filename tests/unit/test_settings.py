from __future__ import annotations

import pytest
import yaml

from goodfellaz17.settings import ConfigError, Role, load_settings, parse_api_keys
from tests.deploy_manifests import K8S


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


# ---------------------------------------------------------------- production refuses unsafe values

STRONG_KEY = "k" * 24
SESSION_SECRET = "s" * 48


def _production(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    values = {
        "GOODFELLAZ17_ENV": "production",
        "GOODFELLAZ17_API_KEYS": f"{STRONG_KEY}:operator",
        "GOODFELLAZ17_SESSION_SECRET": SESSION_SECRET,
    }
    for name, value in {**values, **env}.items():
        monkeypatch.setenv(name, value)


def _refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    _production(monkeypatch, **env)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_safe_production_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    _production(monkeypatch)
    settings = load_settings()
    assert settings.is_production
    assert settings.session_secret is not None
    assert SESSION_SECRET not in repr(settings)


def test_production_refuses_the_example_secrets_placeholder_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    placeholder = example["GOODFELLAZ17_API_KEYS"]
    message = _refusal(monkeypatch, GOODFELLAZ17_API_KEYS=placeholder)
    assert message.startswith("GOODFELLAZ17_API_KEYS:")
    assert "placeholder" in message
    assert placeholder.rpartition(":")[0] not in message, "the key itself is never echoed"
    message = _refusal(
        monkeypatch, GOODFELLAZ17_API_KEYS=f"{STRONG_KEY}:operator,changeme-0123456789abcd:read"
    )
    assert message.startswith("GOODFELLAZ17_API_KEYS:")


def test_production_refuses_webhooks_without_tls_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _refusal(monkeypatch, GOODFELLAZ17_WEBHOOK_VERIFY_TLS="false")
    assert message.startswith("GOODFELLAZ17_WEBHOOK_VERIFY_TLS:")


@pytest.mark.parametrize("env", ["production", "development"])
def test_a_key_listed_twice_is_refused(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    # With two roles the last one used to win silently.
    message = _refusal(
        monkeypatch,
        GOODFELLAZ17_ENV=env,
        GOODFELLAZ17_API_KEYS=f"{STRONG_KEY}:read,other-key-0123456789:orders,{STRONG_KEY}:operator",
    )
    assert message.startswith("GOODFELLAZ17_API_KEYS:")
    assert "entries 1 and 3" in message
    assert STRONG_KEY not in message


def test_production_needs_a_strong_session_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    _production(monkeypatch)
    monkeypatch.delenv("GOODFELLAZ17_SESSION_SECRET")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("GOODFELLAZ17_SESSION_SECRET:")
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    for weak in ("short", example["GOODFELLAZ17_SESSION_SECRET"]):
        message = _refusal(monkeypatch, GOODFELLAZ17_SESSION_SECRET=weak)
        assert message.startswith("GOODFELLAZ17_SESSION_SECRET:")
        assert weak not in message


def test_development_needs_no_session_secret() -> None:
    assert load_settings().session_secret is None  # generated in the data folder instead
