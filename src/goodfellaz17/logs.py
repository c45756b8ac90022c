"""Structured logging: JSON lines in production, readable lines in a terminal.

Every line has a stable `event` key. Standard-library loggers (uvicorn,
psycopg) go through the same renderer. Secrets never reach the output: any
field whose name looks like a credential, at any depth, is replaced; the
configured API keys and database passwords, and the password of any
PostgreSQL URL or conninfo string, are scrubbed from every string value as a
last line of defence. Tracebacks are formatted *before* the scrubber runs, so
an exception's message and its traceback are scrubbed like any other text.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from structlog.typing import EventDict, Processor

from goodfellaz17.settings import Settings

_SECRET_FIELDS = ("api_key", "x-api-key", "x_api_key", "apikey", "password", "authorization")
REDACTED = "[redacted]"

# The password of a URL (`postgresql://user:password@host`) and of a libpq
# conninfo string (`password=...`, quoted or not), wherever they appear.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]*@")
_CONNINFO_PASSWORD = re.compile(r"(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\\]\S*)")
# A configured password shorter than this is only hidden where it is written
# as a password (the patterns above): hiding every "pw" in every line would
# garble the logs and protect nothing.
_MIN_LITERAL_SECRET = 6


def _is_secret_field(name: object) -> bool:
    return isinstance(name, str) and name.lower() in _SECRET_FIELDS


def scrub_passwords(text: str) -> str:
    """`text` with the password of every URL and conninfo string hidden."""
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return _CONNINFO_PASSWORD.sub(rf"\1{REDACTED}", text)


class SecretScrubber:
    """A processor that removes configured secrets from every log event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, BaseException):  # rendered later with repr(): scrub it now
            value = f"{type(value).__name__}: {value}"
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return scrub_passwords(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if _is_secret_field(k) else self._scrub(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        return value

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            if _is_secret_field(key):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._scrub(event_dict[key])
        return event_dict


def _rename_message(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    # stdlib records carry the text in `event`; keep the logger name for context.
    record = event_dict.get("_record")
    if record is not None and "logger" not in event_dict:
        event_dict["logger"] = record.name
    return event_dict


def configured_secrets(settings: Settings) -> list[str]:
    """The literal secrets to hide: the API keys and the database passwords."""
    found = [k.secret for k in settings.api_keys]
    for url in (settings.database_url, settings.direct_database_url):
        if url is None:
            continue
        password = urlsplit(url.get_secret_value()).password
        if password and len(password) >= _MIN_LITERAL_SECRET:
            found += [password, unquote(password)]
    return found


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Configure structlog and the stdlib root logger once, at the entry point."""
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and (settings.is_production or not sys.stderr.isatty())
    )
    level = getattr(logging, settings.log_level.upper())
    scrubber = SecretScrubber(configured_secrets(settings))
    # Tracebacks become text before the scrubber sees the event: an exception
    # object rendered after it would print its message, and its frames'
    # source lines, unscrubbed.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _rename_message,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        scrubber,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # drop disabled levels before any work
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pgserver", "yoyo", "httpx", "httpcore", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get_logger(name: str | None = None, **context: Any) -> Any:
    logger = structlog.get_logger(name)
    return logger.bind(**context) if context else logger


def redact_headers(headers: MutableMapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if k.lower() in _SECRET_FIELDS else v) for k, v in headers.items()}
