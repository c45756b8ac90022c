"""Builds the configured backends by name."""

from __future__ import annotations

from goodfellaz17.backends.base import DeliveryBackend
from goodfellaz17.backends.simulated import SimulatedBackend, SimulatedConfig
from goodfellaz17.backends.webhook import WebhookBackend
from goodfellaz17.settings import Settings


def simulated_config(settings: Settings) -> SimulatedConfig:
    return SimulatedConfig(
        latency_ms=settings.sim_latency_ms,
        failure_rate=settings.sim_failure_rate,
        permanent_failure_rate=settings.sim_permanent_failure_rate,
        seed=settings.sim_seed,
        instant=settings.sim_instant,
        use_node_rate=settings.sim_use_node_rate,
        ledger_path=settings.sim_ledger_path,
    )


def build_backends(settings: Settings) -> dict[str, DeliveryBackend]:
    return {
        "simulated": SimulatedBackend(simulated_config(settings)),
        "webhook": WebhookBackend(
            destinations=settings.webhook_destinations,
            timeout_seconds=settings.webhook_timeout_seconds,
            deadline_seconds=settings.webhook_deadline_seconds,
            verify_tls=settings.webhook_verify_tls,
        ),
    }
