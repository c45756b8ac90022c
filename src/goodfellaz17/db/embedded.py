"""The embedded PostgreSQL: used when DATABASE_URL is unset.

A real PostgreSQL server (from the `pgserver` package) in a local data folder,
reachable over a Unix socket only. Several processes may share it: pgserver
counts the handles and stops the server when the last one exits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, stop_on_exit: bool = True) -> None:
        self.pgdata = data_dir / "pgdata"
        self._stop_on_exit = stop_on_exit
        self._server: Any = None

    def start(self) -> str:
        import warnings

        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            import pgserver  # heavy import, only when the embedded server is used

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # pgserver logs every command it runs at INFO; we only want its errors.
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                self.pgdata, cleanup_mode="stop" if self._stop_on_exit else None
            )
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
