"""Subprocess helpers for end-to-end tests: workers and servers on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import API_KEYS


def service_env(db_url: str, **overrides: Any) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GOODFELLAZ17_") and k != "DATABASE_URL"
    }
    env.update(
        {
            "DATABASE_URL": db_url,
            "GOODFELLAZ17_API_KEYS": API_KEYS,
            "GOODFELLAZ17_LOG_FORMAT": "json",
            "GOODFELLAZ17_SIM_LATENCY_MS": "5",
            "GOODFELLAZ17_SIM_USE_NODE_RATE": "false",
            "GOODFELLAZ17_BACKOFF_BASE_SECONDS": "0.05",
            "GOODFELLAZ17_BACKOFF_MAX_SECONDS": "0.5",
            "GOODFELLAZ17_WORKER_HEARTBEAT_SECONDS": "0.5",
            "GOODFELLAZ17_WORKER_RESCUE_INTERVAL_SECONDS": "0.5",
        }
    )
    env.update({f"GOODFELLAZ17_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


class Proc:
    """A goodfellaz17 subprocess whose output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "goodfellaz17", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.kill()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
