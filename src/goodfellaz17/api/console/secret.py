"""The console's session signing secret: configured, or kept in the data folder.

Production requires GOODFELLAZ17_SESSION_SECRET (settings refuse to start
without a strong one), so every replica signs alike. In development a random
secret is generated once and kept, readable by its owner only, in
`<GOODFELLAZ17_DATA_DIR>/console-session-secret`, so a restart logs nobody out.
The secret is never derived from the API keys and never logged.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from goodfellaz17.logs import get_logger
from goodfellaz17.settings import Settings

FILE_NAME = "console-session-secret"
SECRET_BYTES = 32

log = get_logger(__name__)


def session_secret(settings: Settings) -> bytes:
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path = settings.data_dir / FILE_NAME
    try:
        return _kept_secret(path)
    except OSError as exc:
        log.warning(
            "console session secret not kept: sessions end when this process stops",
            path=str(path),
            error=type(exc).__name__,
        )
        return secrets.token_hex(SECRET_BYTES).encode()


def _kept_secret(path: Path) -> bytes:
    """The secret in `path`, created there first if missing. Two processes
    starting at once agree: the file appears whole (a hard link of a
    finished temporary file), and the one that loses the race reads it."""
    if path.exists():
        return _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 2 * SECRET_BYTES:
        raise OSError(f"{path} holds no usable secret")
    return secret.encode()
