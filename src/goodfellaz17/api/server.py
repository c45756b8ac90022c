"""Running the app under uvicorn with a clean exit on SIGTERM/SIGINT.

`uvicorn_config` is the one place the HTTP server is configured: no
`server` header (the answer does not name the software and its version, which
only helps whoever looks for a known hole), no uvicorn access log (the app
logs each request itself, without credentials).

uvicorn re-raises the stop signal after its graceful shutdown, so the process
dies by the signal (exit -15) and the caller's clean-up (stopping an embedded
PostgreSQL) never runs. Here the signal only starts the graceful shutdown:
the lifespan stops the worker within its grace period, and the process then
exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Generator
from typing import Any

import uvicorn

_HANDLED = (signal.SIGINT, signal.SIGTERM)


def uvicorn_config(app: Any, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        **options,
    )


class GracefulServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _HANDLED}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
