"""Subprocesses of the benchmark: engine workers, the API server, peers.

Every process started here is stopped here, by its own PID (SIGTERM, then
SIGKILL after a grace period), whatever happens to the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

VENV_BIN = Path(sys.executable).parent


class ProcessDied(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise ProcessDied(
                f"{self.name} (pid {self.pid}) exited with {self.popen.returncode}; "
                f"last log lines:\n{tail(self.log_path)}"
            )


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without any GOODFELLAZ17_* or DATABASE_URL
    (a developer's settings must not leak into a measurement), plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GOODFELLAZ17_") and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def start(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the bench reaches them only through stop()
        )
    return Child(name, popen, log_path)


def stop(children: Sequence[Child], grace: float = 30.0) -> None:
    for child in children:
        if child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            child.popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            child.popen.wait(timeout=10)


@contextlib.contextmanager
def running(children: list[Child], grace: float = 30.0) -> Iterator[list[Child]]:
    try:
        yield children
    finally:
        stop(children, grace)


def wait_until(
    condition: Any,
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    children: Sequence[Child] = (),
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for child in children:
            child.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def count_listeners(conn: psycopg.Connection[Any], application_prefix: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name LIKE %s AND query ILIKE 'LISTEN%%' AND state = 'idle'",
        (application_prefix + "%",),
    ).fetchone()
    assert row is not None
    return int(row[0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------- the engine


def engine_env(
    database_url: str, data_dir: Path, batch: int, extra: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """A worker on the simulated backend in instant mode (no latency, no
    failures), with the given claim batch size; everything else as shipped."""
    env = clean_env(
        {
            "DATABASE_URL": database_url,
            "GOODFELLAZ17_DATA_DIR": str(data_dir),
            "GOODFELLAZ17_SIM_INSTANT": "true",
            "GOODFELLAZ17_SIM_FAILURE_RATE": "0",
            "GOODFELLAZ17_SIM_PERMANENT_FAILURE_RATE": "0",
            "GOODFELLAZ17_WORKER_BATCH_SIZE": str(batch),
            "GOODFELLAZ17_LOG_FORMAT": "json",
        }
    )
    env.update(dict(extra))
    return env


def start_workers(count: int, env: Mapping[str, str], log_dir: Path, tag: str) -> list[Child]:
    exe = str(VENV_BIN / "goodfellaz17")
    return [start(f"{tag}-worker-{i}", [exe, "worker"], env, log_dir) for i in range(count)]


def wait_workers_ready(
    conn: psycopg.Connection[Any], workers: Sequence[Child], timeout: float = 90.0
) -> None:
    """Ready = every worker has its LISTEN connection up and idle (its
    application_name carries the worker id, which contains the PID)."""

    def all_listening() -> bool:
        return all(count_listeners(conn, f"goodfellaz17-listen:%-{w.pid}-") >= 1 for w in workers)

    wait_until(
        all_listening,
        timeout=timeout,
        what=f"{len(workers)} worker(s) to listen",
        children=workers,
    )
